"""Files that must never be left half-written: checkpoints, results."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


@contextlib.contextmanager
def _atomic_file(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A temporary file in ``path``'s folder that replaces ``path`` only once fully written and
    flushed to disk; on any error the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file owner-only (0600); give it the permissions open() would have.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (POSIX; not possible on every platform or filesystem).
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, binary: bool = True) -> None:
    """``write(f)`` into a temporary file, then atomically rename it to ``path``."""
    with _atomic_file(Path(path), "wb" if binary else "w") as f:
        write(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that leaves either the old file or the complete new one, never a partial one
    (a run killed mid-write resumes from the previous checkpoint)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def safe_torch_load(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only, never arbitrary
    pickled objects (checkpoints come from other people's machines)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(
            f"could not load {os.fspath(path)!r} as a weights-only checkpoint (tensors and plain containers "
            f"only; files holding other pickled objects are refused for safety): {error}"
        ) from error
