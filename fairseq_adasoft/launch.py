"""``fairseq-train`` under ``torchrun``, on CPUs and on one-GPU-per-process nodes.

fairseq 0.12 reads torchrun's environment only when ``--distributed-world-size``
is given, and then divides the rank by ``torch.cuda.device_count()``, which is
a ZeroDivisionError on CPU; without the flag each process silently trains
alone (world size 1). This entry point turns torchrun's RANK, WORLD_SIZE and
LOCAL_RANK into fairseq's explicit flags and then runs ``fairseq-train``::

    torchrun --nproc_per_node 2 -m fairseq_adasoft.launch DATA --cpu \\
        --distributed-backend gloo --user-dir fairseq_adasoft ...

fairseq also hands ``device_ids=[device_id]`` to DistributedDataParallel for
``--ddp-backend pytorch_ddp``/``c10d``, which torch rejects for CPU modules;
``cpu_ddp_compat`` drops those arguments when the model lives on the CPU.

After a training that returned normally, ``finish`` flushes the output, runs
the atexit handlers and leaves with ``os._exit(0)``: the rare SIGABRT of
2-process gloo runs ("terminate called without an active exception") comes
from C++ threads torn down during interpreter finalization, after the work is
done, and must not turn a finished training into a failed exit code.

Outside torchrun it is plain ``fairseq-train``.
"""

import atexit
import os
import sys
from typing import Dict, List

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_flags(argv: List[str], env: Dict[str, str]) -> List[str]:
    """fairseq flags for this torchrun process (empty outside torchrun)."""
    if not all(key in env for key in TORCHRUN_ENV):
        return []
    for flag in ("--distributed-rank", "--distributed-world-size", "--distributed-init-method"):
        if any(arg == flag or arg.startswith(flag + "=") for arg in argv):
            raise ValueError(
                f"{flag} is set by torchrun through fairseq_adasoft.launch; remove it from the command"
            )
    return [
        "--distributed-init-method", "env://",
        "--distributed-world-size", env["WORLD_SIZE"],
        "--distributed-rank", env["RANK"],
        "--device-id", env["LOCAL_RANK"],
        "--distributed-no-spawn",
    ]


def cpu_ddp_compat() -> None:
    """Let fairseq wrap CPU models in DistributedDataParallel (no device_ids)."""
    import fairseq.models.distributed_fairseq_model as dfm

    if getattr(dfm.DistributedDataParallel, "cpu_compatible", False):
        return

    class DistributedDataParallel(dfm.DistributedDataParallel):
        cpu_compatible = True

        def __init__(self, module, device_ids=None, output_device=None, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)

    dfm.DistributedDataParallel = DistributedDataParallel


def finish() -> None:
    """Exit 0 after a finished training, skipping the interpreter's finalization."""
    # No destroy_process_group: with NCCL it can block, and _exit stops gloo's threads anyway.
    atexit._run_exitfuncs()  # logging, tensorboard writers, data-loader workers
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def cli_main() -> None:
    from fairseq_cli.train import cli_main as fairseq_train

    cpu_ddp_compat()
    sys.argv += torchrun_flags(sys.argv[1:], dict(os.environ))
    fairseq_train()
    finish()


if __name__ == "__main__":
    cli_main()
