"""The one place argument checks live.

Every value that enters the library — an attack's hyper-parameter, a training setting, a tensor of
images, an option on the command line — is checked where it enters, by one of these functions, so the
same mistake raises the same exception everywhere:

- ``TypeError`` when the value has the wrong type (a float where an int is needed, a bool where a
  number is needed, a string where a tensor is needed);
- ``ValueError`` when the type is right but the value is not (out of range, NaN or infinite, not one
  of the choices, an empty sequence or an empty batch).

Every message starts with the argument's name as the caller knows it (``name``), so a CLI can prefix
it with the option and a user reading a traceback knows which argument to change. NaN and Inf are
refused wherever a real value enters: a NaN eps or learning rate never computes anything meaningful,
and comparisons with NaN are false, so a range check alone would let it through.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def _type_name(value: object) -> str:
    return type(value).__name__


def is_int(value: object) -> bool:
    """An integer that is not a bool (numpy integers count; a 0-dim integer tensor does not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number that is not a bool (ints and numpy floats count; a tensor does not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool), checked inside ``[minimum, maximum]`` (either end may be open: None).

    Raises:
        TypeError: ``value`` is not an int (``1.5``, ``True``, ``"3"``).
        ValueError: ``value`` is outside the range.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {_type_name(value)} {value!r}")
    value = int(value)  # type: ignore[arg-type]
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_optional_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """``None``, or an int checked as :func:`check_int` does."""
    return None if value is None else check_int(value, name, minimum, maximum)


def check_real(
    value: object,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A real number (not a bool), finite, inside the interval from ``low`` to ``high``.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is NaN, infinite, or outside the interval.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {_type_name(value)} {value!r}")
    value = float(value)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below):
        raise ValueError(f"{name} must be {_interval(low, high, low_inclusive, high_inclusive)}, got {value:g}")
    return value


def _interval(low: float, high: float, low_inclusive: bool, high_inclusive: bool) -> str:
    if math.isinf(high):
        return f"{'>=' if low_inclusive else '>'} {low:g}"
    if math.isinf(low):
        return f"{'<=' if high_inclusive else '<'} {high:g}"
    return f"in {'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"


def check_optional_real(value: object, name: str, **interval: Any) -> float | None:
    """``None``, or a real number checked as :func:`check_real` does."""
    return None if value is None else check_real(value, name, **interval)


def check_bool(value: object, name: str) -> bool:
    """``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_type_name(value)} {value!r}")
    return value


def check_choice(value: object, name: str, choices: Collection[T]) -> T:
    """One of ``choices`` (the message lists them)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value asked of a set
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}, got {value!r}")
    return value  # type: ignore[return-value]


def check_sequence(value: object, name: str, *, nonempty: bool = True) -> tuple[Any, ...]:
    """A list or tuple (not a string, not a single number) as a tuple; ``nonempty`` refuses ``()``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple, got {_type_name(value)} {value!r}")
    if nonempty and len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return tuple(value)


def check_ints(value: object, name: str, minimum: int | None = None, *, nonempty: bool = True,
               unique: bool = False) -> tuple[int, ...]:
    """A list or tuple of ints, each checked as :func:`check_int` does (the message names the entry)."""
    items = tuple(check_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(check_sequence(value, name,
                                                                                              nonempty=nonempty)))
    if unique and len(set(items)) != len(items):
        repeated = sorted({v for v in items if items.count(v) > 1})
        raise ValueError(f"{name} lists {repeated} more than once")
    return items


def check_reals(value: object, name: str, *, nonempty: bool = True, **interval: Any) -> tuple[float, ...]:
    """A list or tuple of real numbers, each checked as :func:`check_real` does."""
    return tuple(check_real(v, f"{name}[{i}]", **interval)
                 for i, v in enumerate(check_sequence(value, name, nonempty=nonempty)))


def check_tensor(value: object, name: str) -> torch.Tensor:
    """A ``torch.Tensor``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_type_name(value)}")
    return value


def check_finite(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """``tensor`` with every element finite (integer tensors always are); meta tensors pass.

    A NaN pixel, feature or logit makes every number computed from it meaningless, and slips past
    range checks (``nan < 0`` is false), so it is refused where it enters.
    """
    check_tensor(tensor, name)
    if tensor.is_floating_point() or tensor.is_complex():
        if tensor.device.type != "meta" and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = ~torch.isfinite(tensor)
            count = int(bad.sum())
            kind = "NaN" if bool(torch.isnan(tensor).any()) else "infinite"
            raise ValueError(f"{name} holds {count} {kind} value{'s' if count > 1 else ''} "
                             f"(of {tensor.numel()}); every value must be finite")
    return tensor


def check_nonempty(count: int, name: str, what: str = "samples") -> int:
    """Refuse to compute a statistic over nothing: ``count`` must be >= 1."""
    if count < 1:
        raise ValueError(f"{name} holds no {what}: nothing to compute over")
    return count


def check_same_device(tensors: Iterable[tuple[str, torch.Tensor]]) -> torch.device:
    """All the named tensors on one device (the message names the two that differ)."""
    first: tuple[str, torch.Tensor] | None = None
    for name, t in tensors:
        if first is None:
            first = (name, t)
        elif t.device != first[1].device:
            raise ValueError(f"{name} is on {t.device} but {first[0]} is on {first[1].device}; "
                             "move them to one device")
    if first is None:
        raise ValueError("no tensors given")
    return first[1].device


__all__ = [
    "check_bool", "check_choice", "check_finite", "check_int", "check_ints", "check_nonempty",
    "check_optional_int", "check_optional_real", "check_real", "check_reals", "check_same_device",
    "check_sequence", "check_tensor", "is_int", "is_real",
]
