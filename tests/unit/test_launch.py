import pytest

from fairseq_adasoft.launch import torchrun_flags

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}


def test_torchrun_environment_becomes_fairseq_flags():
    assert torchrun_flags(["data"], TORCHRUN) == [
        "--distributed-init-method", "env://", "--distributed-world-size", "4",
        "--distributed-rank", "3", "--device-id", "1", "--distributed-no-spawn",
    ]


def test_outside_torchrun_nothing_is_added():
    assert torchrun_flags(["data"], {"RANK": "0"}) == []


def test_conflicting_flags_are_refused():
    with pytest.raises(ValueError, match="--distributed-world-size is set by torchrun"):
        torchrun_flags(["data", "--distributed-world-size=2"], TORCHRUN)


def test_finish_runs_atexit_handlers_flushes_and_skips_finalization():
    """After training, finish() exits 0 without the interpreter's teardown: a
    thread that teardown would wait on forever does not keep the process."""
    import subprocess
    import sys

    script = ("import atexit, sys, threading, time\n"
              "from fairseq_adasoft.launch import finish\n"
              "threading.Thread(target=time.sleep, args=(600,)).start()\n"
              "atexit.register(lambda: print('atexit ran'))\n"
              "sys.stdout.write('buffered')\n"
              "finish()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "bufferedatexit ran\n"
