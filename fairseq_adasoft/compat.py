"""The plugin's import-time fixes to what it runs on, in one place; ``install()``
(run when ``--user-dir`` imports the plugin, before fairseq-train saves or
loads anything) applies them, once.

numpy 2: fairseq 0.12's ``TokenBlockDataset`` (``--sample-break-mode eos``,
the hub's ``sample``/``score``, ``fairseq-interactive``) and
``LanguagePairDataset`` ask for ``np.compat.long``, which numpy 2 removed; in
numpy 1.x it was Python's ``int``. A shim rather than a ``numpy<2`` pin: numpy
1.26 has no wheels for Python >= 3.13, torch and the rest of the stack are
built against numpy 2, and existing environments are fixed without a
reinstall. With numpy 1.x it does nothing.

Checkpoint files that are whole or absent, and a clear error for one that is
not: fairseq 0.12 writes the first file of a save atomically (temp file +
rename) but then copies it onto ``checkpoint_last.pt``/``checkpoint_best.pt``
with ``PathManager.copy``, i.e. ``shutil.copyfile``, which truncates the
destination first: a kill during that copy destroys the last good checkpoint.
``fairseq.checkpoint_utils`` alone gets a ``PathManager`` whose ``copy``
writes a temp file beside the destination, fsyncs it and ``os.replace``s it
into place. fairseq's checkpoint loading is wrapped so that a truncated
checkpoint, or a file that is no checkpoint at all (``dict.txt``), passed to
``--path`` or found at resume, ends in a ``ValueError`` that names the file and
the newest intact checkpoint beside it, instead of ``PytorchStreamReader failed
reading zip archive`` or ``IndexError: pop from empty list``. A checkpoint's saved
model config is read in the names its model's flags have today (the model
class's ``upgrade_saved_cfg``: qrnn_lm's ``output_gate`` is ``no_output_gate``),
before fairseq merges it with the model's dataclass, which drops unknown keys.

fairseq's models without a dataclass (``lstm_lm``, ``transformer_lm``'s older
saves) keep their config as an ``argparse.Namespace``, which torch >= 2.6's
weights-only ``torch.load`` (fairseq 0.12 calls it without ``weights_only``)
refuses: ``install()`` allows that one plain container.
"""

import argparse
import functools
import os
import shutil
import types
import zipfile
from typing import Optional

import numpy as np

COPY_SUFFIX = ".tmp"  # fairseq's own temp suffix; checkpoint_paths' patterns never match it


def atomic_copy(src: str, dst: str) -> bool:
    """Copy ``src`` onto ``dst`` so that ``dst`` is always the old or the new whole file."""
    tmp = dst + COPY_SUFFIX
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 16 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(dst)))
    return True


def _fsync_dir(path: str) -> None:
    # The rename itself survives a power cut only once the directory entry is on disk.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_intact(path: str) -> bool:
    """Whether ``path`` is a complete torch.save archive (a truncated one has lost its zip directory)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def newest_intact(directory: str, exclude: str = None) -> Optional[str]:
    """The most recently written intact ``*.pt`` checkpoint in ``directory``, or None."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".pt")]
    except OSError:
        return None
    paths = [os.path.join(directory, n) for n in names]
    paths = [p for p in paths if os.path.isfile(p) and not _same(p, exclude)]
    for path in sorted(paths, key=os.path.getmtime, reverse=True):
        if is_intact(path):
            return path
    return None


def _same(a: str, b: Optional[str]) -> bool:
    return b is not None and os.path.abspath(a) == os.path.abspath(b)


def unreadable(path: str, cause: BaseException, flag: str = "--path") -> ValueError:
    """The error for a checkpoint that is truncated, corrupt or not a checkpoint at all."""
    text = _is_text(path)
    intact = newest_intact(os.path.dirname(os.path.abspath(path)), exclude=path)
    if flag == "--restore-file":
        fix = (f"resume from the newest intact checkpoint with --restore-file {intact}" if intact else
               f"no intact checkpoint is left beside it: delete {path} to train from scratch")
    else:
        fix = f"pass {flag} a checkpoint_*.pt written by fairseq-train" + (f", e.g. {intact}" if intact else "")
    # torch's first sentence names the damage (the rest is its own advice); for a text file it only confuses.
    kind = ("a text file, not a checkpoint" if text else
            f"truncated or corrupt ({type(cause).__name__}: {str(cause).split('. ')[0]})")
    error = ValueError(f"checkpoint {path} is {kind}; {fix}")
    error.unreadable_checkpoint = (path, cause)
    return error


def _is_text(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return bool(head) and b"\0" not in head and not head.startswith(b"PK")


def _readable_loader(load):
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except Exception as error:
            # Errors from a complete archive are someone else's (overrides, upgrades): pass them on.
            if "://" in str(path) or not os.path.isfile(path) or is_intact(path):
                raise
            raise unreadable(path, error) from error
    load_checkpoint_to_cpu.adasoft_readable = True
    return load_checkpoint_to_cpu


def _upgraded_loader(load):
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        from fairseq.models import ARCH_MODEL_REGISTRY

        state = load(path, *args, **kwargs)
        model_cfg = state["cfg"].get("model") if state.get("cfg") is not None else None
        if model_cfg is not None:
            # A dataclass model's config is a DictConfig; an older model's an argparse.Namespace.
            read = model_cfg.get if hasattr(model_cfg, "get") else lambda key: getattr(model_cfg, key, None)
            model = ARCH_MODEL_REGISTRY.get(read("_name") or read("arch"))
            if hasattr(model, "upgrade_saved_cfg"):
                model.upgrade_saved_cfg(model_cfg)
        return state
    return load_checkpoint_to_cpu


def _resume_names_restore_file(load_checkpoint):
    @functools.wraps(load_checkpoint)
    def wrapped(cfg, trainer, **kwargs):
        try:
            return load_checkpoint(cfg, trainer, **kwargs)
        except ValueError as error:
            if not hasattr(error, "unreadable_checkpoint"):
                raise
            path, cause = error.unreadable_checkpoint
            raise unreadable(path, cause, flag="--restore-file") from cause
    return wrapped


def install() -> None:
    """Apply the fixes; idempotent."""
    import torch

    _numpy_compat_long()
    _atomic_readable_checkpoints()
    torch.serialization.add_safe_globals([argparse.Namespace])  # older fairseq models' saved config


def _numpy_compat_long() -> None:
    """Define ``numpy.compat.long`` where numpy lacks ``numpy.compat`` (numpy >= 2)."""
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=int)


def _atomic_readable_checkpoints() -> None:
    """Patch ``fairseq.checkpoint_utils`` (only that module) once."""
    from fairseq import checkpoint_utils
    from fairseq.file_io import PathManager

    if getattr(checkpoint_utils.load_checkpoint_to_cpu, "adasoft_readable", False):
        return

    class AtomicCopyPathManager(PathManager):
        @staticmethod
        def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
            if "://" in src_path or "://" in dst_path:  # an ioPath URI: leave it to ioPath
                return PathManager.copy(src_path, dst_path, overwrite)
            return atomic_copy(src_path, dst_path)

    checkpoint_utils.PathManager = AtomicCopyPathManager
    checkpoint_utils.load_checkpoint_to_cpu = _readable_loader(_upgraded_loader(checkpoint_utils.load_checkpoint_to_cpu))
    checkpoint_utils.load_checkpoint = _resume_names_restore_file(checkpoint_utils.load_checkpoint)
