"""Settings described once: the dataclass field carries what a setting means, its command-line
option, its ``--help`` group and its choices; the CLI reads those descriptions (:func:`settings`)
instead of repeating them. Plus the two value checks the experiments' configs need that
:mod:`nonrobust_ext._validate` does not have (a device that exists here, a path given as text).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .._validate import check_choice, check_device

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


def check_study_device(value: object, name: str) -> str:
    """A device string (:func:`nonrobust_ext._validate.check_device`) of a type in :data:`DEVICE_TYPES`:
    the settings are stored as JSON, so the name is kept as given."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    check_choice(check_device(value, name).type, f"{name}'s type", DEVICE_TYPES)
    return value


__all__ = ["DEVICE_TYPES", "Setting", "check_study_device", "setting", "settings"]
