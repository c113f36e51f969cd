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
import os
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
        raise TypeError(f"{name} must be a tensor (torch.Tensor), got {_type_name(value)}")
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


def check_optional_path(value: object, name: str) -> str | None:
    """``None``, or a non-empty path (``str`` or ``os.PathLike``) as a string."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str) or None, got {_type_name(value)} {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name} must be a non-empty path, got {value!r}")
    return text


def check_device(value: object, name: str = "device") -> torch.device:
    """A device this process can compute on: a ``torch.device`` or its name, that exists here.

    ``torch.device("bogus")`` raises torch's parser error and ``torch.device("cuda")`` succeeds on a
    machine without CUDA (failing later, mid-run); both are refused here, naming the argument. ``meta``
    is refused too: it holds no values.

    Raises:
        TypeError: not a ``str`` or ``torch.device``.
        ValueError: not a device name, ``meta``, or not available on this machine (``"cuda"`` without
            a GPU, ``"cuda:7"`` with fewer).
    """
    if not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device or a device name such as 'cpu' or 'cuda:0', "
                        f"got {_type_name(value)} {value!r}")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):  # torch's own message is about its parser, not the argument
        raise ValueError(f"{name} must name a device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from None
    if device.type == "meta":
        raise ValueError(f"{name} must be a device that computes values, got 'meta'")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} is {str(value)!r} but torch sees no CUDA device here (torch {torch.__version__}, "
                             f"built {'with' if torch.version.cuda else 'without'} CUDA); use 'cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} is {str(value)!r} but torch sees {count} CUDA device(s): "
                             f"indices 0 to {count - 1}")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError):  # a backend this build of torch lacks
        raise ValueError(f"{name} {str(value)!r} is not available on this machine") from None
    return device


def resolve_device(model: object, device: object = None, name: str = "device", *,
                   default: torch.device | None = None) -> torch.device:
    """``device`` if given (checked by :func:`check_device`), else where ``model``'s parameters (or
    buffers) are, else ``default`` (the CPU when None)."""
    if device is not None:
        return check_device(device, name)
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu") if default is None else default


#: The dtypes images (and attack iterates) may have: what the compiled ops compute in.
IMAGE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def check_images(x: object, name: str = "x", *, min_dim: int = 2) -> torch.Tensor:
    """A floating-point batch of at least ``min_dim`` dimensions (``[B, C, ...]``) whose every value
    is finite.

    Raises:
        TypeError: not a tensor, or not float32/float64/bfloat16/float16.
        ValueError: too few dimensions, or a NaN/infinite value (a NaN pixel passes every range
            check, ``nan < lo`` being false, and makes every number computed from it meaningless).
    """
    check_tensor(x, name)
    assert isinstance(x, torch.Tensor)
    if x.dtype not in IMAGE_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float32/float64/bfloat16/float16), got {x.dtype}; "
                        "convert images with x.float() / 255")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions ([B, C, ...]), got shape {tuple(x.shape)}")
    return check_finite(x, name)


def check_labels(y: object, name: str = "y", *, n: int | None = None, device: torch.device | None = None,
                 nonnegative: bool = False) -> torch.Tensor:
    """Integer class labels ``[n]``.

    Float labels are refused rather than truncated (``1.7`` is not a class), and so are bools.
    ``nonnegative`` also checks every label is >= 0 (a host sync on a GPU: callers that check the
    label range against the model's classes later leave it off).

    Raises:
        TypeError: not a tensor, or not an integer tensor.
        ValueError: not 1-D, not ``n`` long, not on ``device``, or (``nonnegative``) a label < 0.
    """
    check_tensor(y, name)
    assert isinstance(y, torch.Tensor)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of labels [N], got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} labels for {n} inputs: the inputs and {name} must have the "
                         "same length")
    if device is not None and y.device != device:
        raise ValueError(f"{name} is on {y.device} but the inputs are on {device}")
    if nonnegative and y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} must hold class labels >= 0, got {int(y.min())}")
    return y


__all__ = [
    "IMAGE_DTYPES", "check_bool", "check_choice", "check_device", "check_finite", "check_images", "check_int",
    "check_ints", "check_labels", "check_nonempty", "check_optional_int", "check_optional_path",
    "check_optional_real", "check_real", "check_reals", "check_same_device", "check_sequence", "check_tensor",
    "is_int", "is_real", "resolve_device",
]
