"""Settings described once: the dataclass field carries what a setting means, its command-line
option, its ``--help`` group and its choices; the CLI reads those descriptions (:func:`settings`)
instead of repeating them. Plus the two value checks the experiments' configs need that
:mod:`nonrobust_ext._validate` does not have (a device that exists here, a path given as text).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

import torch

# Where the experiments can run (a ``cuda`` device may carry an index: ``cuda:1``).
DEVICE_TYPES = ("cpu", "cuda")


def setting(default: Any, help: str, *, option: str, group: str | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field described once.

    Args:
        default: the field's default (immutable: a tuple, not a list).
        help: what the setting sets, as ``--help`` shows it.
        option: its command-line option, e.g. ``"--eps"``.
        group: its ``--help`` group (``None``: listed with the command's own options).
        choices: the values it takes, for a closed set (the config checks them; ``--help`` lists them).

    Returns:
        A :func:`dataclasses.field` with that description in its ``metadata``.
    """
    return dataclasses.field(default=default,
                             metadata={"help": help, "option": option, "group": group, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Setting:
    """One described setting of a config, as a command line sees it.

    Attributes:
        name: the dataclass field.
        option: its command-line option (``"--eps"``).
        help: what it sets.
        group: its ``--help`` group (``None``: the command's own options).
        choices: the values it takes, for a closed set.
        kind: the type a command line parses: ``int``, ``float``, ``str``, ``pathlib.Path``,
            ``tuple[int, ...]`` or ``tuple[float, ...]`` (``X | None`` is parsed as ``X``: ``None``
            is only ever a default).
        default: the field's default.
    """

    name: str
    option: str
    help: str
    group: str | None
    choices: tuple[str, ...] | None
    kind: Any
    default: Any


def settings(config_class: type) -> list[Setting]:
    """The described settings of a config dataclass (the fields made with :func:`setting`), in
    field order.

    Raises:
        TypeError: ``config_class`` is not a dataclass type.
    """
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"config_class must be a dataclass type, got {config_class!r}")
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if "option" not in f.metadata:
            continue
        kind = hints[f.name]
        members = typing.get_args(kind)
        if type(None) in members:
            (kind,) = (m for m in members if m is not type(None))
        out.append(Setting(name=f.name, option=f.metadata["option"], help=f.metadata["help"],
                           group=f.metadata["group"], choices=f.metadata["choices"], kind=kind, default=f.default))
    return out


def check_optional_path(value: object, name: str) -> str | None:
    """``None``, or a non-empty path (a str or ``os.PathLike``) returned as a str, what JSON records.

    Raises:
        TypeError: neither ``None``, a str nor a path.
        ValueError: an empty or blank path.
    """
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str) or None, got {type(value).__name__} {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return text


def check_device(value: object, name: str) -> str:
    """A device string torch parses, of a type in :data:`DEVICE_TYPES`, that exists on this machine.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: unparseable (``"bogus"``), another type (``"meta"``), or not there (``"cuda"``
            without a CUDA device, ``"cuda:7"`` with fewer GPUs).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    try:
        device: torch.device | None = torch.device(value)
    except (RuntimeError, ValueError):  # torch's message for "bogus" is about its parser, not the user
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:<index>', got {value!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} is {value!r} but torch sees no CUDA device here (torch {torch.__version__}, "
                             f"built {'with' if torch.version.cuda else 'without'} CUDA); use 'cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} is {value!r} but torch sees {count} CUDA device(s): indices 0 to {count - 1}")
    return value


__all__ = ["DEVICE_TYPES", "Setting", "check_device", "check_optional_path", "setting", "settings"]
