"""Two torchrun "nodes" on this machine, one process each, train as one 2-process node does."""

import os
import socket
import subprocess

import pytest

from helpers import ROOT, run, torchrun, train_losses


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(torchrun_args, data_bin, save):
    return torchrun(torchrun_args, str(data_bin), "--distributed-backend", "gloo", "--max-update", "10",
                    "--save-dir", str(save))


@pytest.mark.slow
def test_two_nodes_train_as_one_two_process_node(data_bin, tmp_path):
    _, single = run(launch(["--nproc_per_node", "2", "--master_port", str(free_port())], data_bin, tmp_path / "one"))

    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(
        launch(["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                "--master_addr", "127.0.0.1", "--master_port", str(port)], data_bin, tmp_path / f"node{rank}"),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        outs = [node.communicate(timeout=600)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "distributed init (rank 0)" in outs[0] and "distributed init (rank 1)" in outs[1]
    losses = train_losses(outs[0])  # rank 0 logs the all-reduced losses
    assert len(losses) == 2 and losses == train_losses(single)
