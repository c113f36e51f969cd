"""Files that must never be left half-written (checkpoints, results) and files that must be verified
before they are trusted (every torch file the library loads)."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
import zipfile
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


class UnverifiedFileWarning(UserWarning):
    """A file was loaded without an integrity check (a legacy, pre-zip torch file has no checksums)."""


#: How every ``torch.save`` file since PyTorch 1.6 starts: a zip archive's first local file header.
_ZIP_MAGIC = b"PK\x03\x04"
#: How a legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) torch file starts: pickle
#: protocol 2, then the 10-byte integer torch writes as its magic number.
_LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def verify_torch_file(path: str | os.PathLike[str]) -> str:
    """Check that ``path`` holds an intact ``torch.save`` file before anything is read from it.

    ``torch.save`` writes a zip archive whose every record carries a CRC-32 checksum, but
    ``torch.load`` never checks them: a flipped byte inside a tensor loads silently as a changed
    weight. Here :mod:`zipfile` reads every record and compares its checksum (and the archive's
    structure), so such a file is refused instead.

    Returns:
        ``"zip"`` for a verified archive, ``"legacy"`` for a pre-1.6 torch file, which has no
        checksums and cannot be verified (the caller decides what to do; :func:`safe_torch_load`
        loads it with an :class:`UnverifiedFileWarning`).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be opened.
        ValueError: the file is corrupt (a checksum or the archive's structure does not match), or is
            no torch file at all; the message names the file.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # reads every record, checking its CRC-32
        except Exception as error:  # BadZipFile, a mangled header: zipfile raises many kinds
            raise ValueError(
                f"could not read {name!r}: the file is corrupt (its zip structure is damaged: "
                f"{type(error).__name__}: {error}). Restore it from a copy or write it again."
            ) from error
        if bad is not None:
            raise ValueError(
                f"could not read {name!r}: the file is corrupt (the checksum of its record {bad!r} does not "
                "match its contents, so the values in it have changed since it was written). Restore it from "
                "a copy or write it again."
            )
        return "zip"
    if len(head) > 2 and head[0] == 0x80 and head[2:].startswith(_LEGACY_MAGIC):
        return "legacy"
    raise ValueError(
        f"could not read {name!r} as a torch checkpoint: it is neither a zip archive (torch.save's format) nor a "
        "legacy torch file, so it is corrupt or not a checkpoint"
    )


def safe_torch_load(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a verified file, with ``weights_only=True``.

    Every load of weights, training checkpoints and best-weights files goes through here:

    - **verified**: :func:`verify_torch_file` checks every record's CRC-32 first, so a corrupted file
      raises instead of loading changed values. A legacy (pre-1.6, non-zip) torch file has no
      checksums: it is loaded with an :class:`UnverifiedFileWarning` saying so.
    - **weights only**: tensors and plain containers, never arbitrary pickled objects, which could
      run code when unpickled (checkpoints come from other people's machines).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be opened.
        ValueError: corrupt or not a torch file, or it holds pickled objects other than tensors and
            plain containers; the message names the file.
    """
    name = os.fspath(path)
    if verify_torch_file(path) == "legacy":
        warnings.warn(
            f"{name!r} is a legacy (pre-zip) torch file: it carries no checksums, so it is loaded without an "
            "integrity check. Load and save it again with a current torch to get a verifiable file.",
            UnverifiedFileWarning,
            stacklevel=2,
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:  # the OS's message says it best
        raise
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the class it refused ("Unsupported global: GLOBAL mod.Class");
        # other unpickling errors mean the file is not a pickle / torch checkpoint at all.
        if "global" not in str(error).lower():
            raise ValueError(f"could not read {name!r} as a torch checkpoint: {error}") from error
        raise ValueError(
            f"refusing to load {name!r}: it holds pickled objects other than tensors and plain containers, and "
            "checkpoints are read with torch.load(weights_only=True) so that a file cannot run code. If you "
            "trust this file, load it yourself (torch.load(path, weights_only=False)) and pass what it holds "
            f"instead of the path. torch said: {error}"
        ) from error
    except Exception as error:  # a non-torch payload, an archive torch's reader rejects, ...
        raise ValueError(f"could not read {name!r} as a torch checkpoint: {error}") from error
