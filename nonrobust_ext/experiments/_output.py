"""The output folder of an experiment, checked before any work starts: an hour of training must not
end in "cannot write results.json"."""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: str | os.PathLike[str], name: str = "out") -> Path:
    """``path`` as a folder that exists or can be created, and can be written to. Nothing is created.

    Args:
        path: the output folder.
        name: the argument's name, which every message starts with.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``path`` is not a path.
        ValueError: ``path`` is empty.
        NotADirectoryError: ``path`` or one of its parents is a file.
        PermissionError: the folder (or, when it does not exist yet, its first existing parent) is not
            writable.
    """
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"{name} must be a path, got {type(path).__name__} {path!r}")
    out = Path(path)
    if not str(path).strip():
        raise ValueError(f"{name} must be a non-empty path")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == out else f"is under {existing}, which is a file"
        raise NotADirectoryError(f"{name}: {out} {where}; give a folder")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == out else f" (its parent {existing} is where it would be created)"
        raise PermissionError(f"{name}: {existing} is not writable{where}")
    return out


__all__ = ["check_output_dir"]
