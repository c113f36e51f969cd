"""The compiled ops' argument rules on the Python side.

- Turning user-facing hyper-parameters (numbers, sequences, tensors) into the tensors the ops take,
  checking their values wherever that costs nothing (:func:`as_param_tensor`, :func:`step_param_tensors`).
- The Python mirror of the kernels' prologues (``csrc/common/step_args.h``, ``csrc/common/stats_args.h``):
  the same checks in the same order with the same exception types, used by the fake kernels
  (``_meta.py``, which see shapes, dtypes and devices only) and by the reference twins (``reference.py``,
  which also check memory overlap and, on CPU, the parameter values, as the CPU kernels do).

Which value checks run where (the ops' docstrings in ``ops.py`` say the same):

- Python numbers and sequences: always, here, before they become tensors.
- CPU tensors: in the CPU kernel; here too when a wrapper is about to copy one to another device.
- Tensors already on a CUDA device: nowhere (a look at their values would synchronise the device on
  every call); a NaN there propagates into the op's output, identically in the CUDA kernel and the twin.

The rules: ``eps`` and ``alpha`` finite and >= 0; ``scale`` finite and > 0; ``lo`` and ``hi`` not NaN
(+-inf means unbounded) and ``lo <= hi``. A wrong type is a ``TypeError``, a wrong value, shape, device
or overlapping memory a ``ValueError``; messages name the argument (and, from the mirrors, the op).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import torch

from ._validate import (
    check_int,  # noqa: F401  (re-exported: the ops and the data modules import it from here)
    is_real,
)

Param = Union[float, int, Sequence[float], torch.Tensor]

# What each small parameter may hold: name -> (the requirement, as messages say it, and the test).
_RULES = {
    "rate": ("finite and >= 0", lambda v: math.isfinite(v) and v >= 0),
    "scale": ("finite and > 0", lambda v: math.isfinite(v) and v > 0),
    "bound": ("a number, not NaN (+-inf means unbounded)", lambda v: not math.isnan(v)),
}
PARAM_RULES = {"eps": "rate", "alpha": "rate", "scale": "scale", "lo": "bound", "hi": "bound"}

FEATURE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------- parameter values


def _check_values(values: Sequence[float], name: str, rule: str, *, indexed: bool) -> None:
    need, ok = _RULES[rule]
    for i, v in enumerate(values):
        if not ok(v):
            shown = f"{name}[{i}]" if indexed else name
            raise ValueError(f"{name} must be {need}, got {shown} = {v}")


def _number(value: object, name: str) -> float:
    if not is_real(value):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got "
                        f"{type(value).__name__} {value!r}")
    return float(value)  # type: ignore[arg-type]


_INT_PARAM_DTYPES = (torch.int32, torch.int64)


def _convert(value: Param, name: str, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, list[float] | None]:
    """``value`` as a 1-D tensor on ``device`` in ``dtype``, and its values as floats when they were
    free to read and so checked (a Python number or sequence; a CPU tensor about to be copied to
    another device), else None. Called on every op call: kept lean (one ``.device`` lookup per
    tensor, no torch call to check a Python number)."""
    rule = PARAM_RULES.get(name)
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and value.dtype not in _INT_PARAM_DTYPES:
            raise TypeError(f"{name} must be a real number or tensor, got a {value.dtype} tensor")
        where = value.device.type
        if where == "meta" and device.type != "meta":
            raise ValueError(f"{name} is a meta tensor (it holds no values) but the batch is on {device}")
        values = None
        if where == "cpu" and device.type != "cpu":
            values = value.detach().reshape(-1).double().tolist()
            if rule is not None:
                _check_values(values, name, rule, indexed=len(values) != 1)
        return value.to(device=device, dtype=dtype).reshape(-1), values
    if type(value) in (float, int) or is_real(value):
        values = [float(value)]  # type: ignore[arg-type]
        indexed = False
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        values = [_number(v, f"{name}[{i}]") for i, v in enumerate(value)]
        indexed = len(values) != 1
    else:
        _number(value, name)  # raises the TypeError (bools, strings, other objects)
        raise AssertionError("unreachable")
    if rule is not None:
        _check_values(values, name, rule, indexed=indexed)
    return torch.tensor(values, device=device, dtype=dtype), values


def as_param_tensor(value: Param, like: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` as a 1-D tensor on ``like``'s device in the kernels' compute dtype.

    The values of ``eps``, ``alpha``, ``scale``, ``lo`` and ``hi`` (by ``name``) are checked where that is
    free: Python numbers and sequences always; a CPU tensor when it is copied to another device (a CPU
    tensor for a CPU batch is left to the CPU kernel, which checks it).

    Raises:
        TypeError: ``value`` is not a number, a sequence of numbers or a real tensor.
        ValueError: a checked value breaks its rule; ``value`` is a meta tensor (it has no values)
            while ``like`` is not.
    """
    return _convert(value, name, like.device, opmath_dtype(like.dtype))[0]


def step_param_tensors(
    like: torch.Tensor, *, eps: Param, alpha: Param | None, scale: Param, lo: Param, hi: Param
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attack-step parameters as the op takes them (``alpha`` None: ``random_init_``, which has none),
    their values checked as :func:`as_param_tensor` says, and ``lo <= hi`` where both were read.

    Raises:
        TypeError, ValueError: as :func:`as_param_tensor`; ValueError when some ``lo`` exceeds its ``hi``.
    """
    device, dtype = like.device, opmath_dtype(like.dtype)
    eps_t = _convert(eps, "eps", device, dtype)[0]
    alpha_t = None if alpha is None else _convert(alpha, "alpha", device, dtype)[0]
    scale_t = _convert(scale, "scale", device, dtype)[0]
    lo_t, lo_v = _convert(lo, "lo", device, dtype)
    hi_t, hi_v = _convert(hi, "hi", device, dtype)
    if lo_v is not None and hi_v is not None:
        _check_order(lo_v, hi_v)
    return eps_t, alpha_t, scale_t, lo_t, hi_t


def _check_order(lo_v: list[float], hi_v: list[float]) -> None:
    """``lo <= hi`` in every channel, for one value or one per channel on either side (NaN refused before:
    it makes every comparison false)."""
    if not lo_v or not hi_v:
        return
    n = max(len(lo_v), len(hi_v))
    if len(lo_v) not in (1, n) or len(hi_v) not in (1, n):
        return  # a shape mistake: the op reports it
    for c in range(n):
        low, high = lo_v[0 if len(lo_v) == 1 else c], hi_v[0 if len(hi_v) == 1 else c]
        if not low <= high:
            at_lo = "" if len(lo_v) == 1 else f"[{c}]"
            at_hi = "" if len(hi_v) == 1 else f"[{c}]"
            raise ValueError(f"lo must be <= hi in every channel, got lo{at_lo} = {low} > hi{at_hi} = {high}")


def check_step_param_values(op: str, eps: torch.Tensor, alpha: torch.Tensor | None, scale: torch.Tensor,
                            lo: torch.Tensor, hi: torch.Tensor) -> None:
    """The CPU kernels' value checks (step 5 of ``csrc/common/step_args.h``) on CPU parameter tensors."""
    for name, t in (("eps", eps), ("alpha", alpha), ("scale", scale), ("lo", lo), ("hi", hi)):
        if t is not None and t.device.type == "cpu":
            values = t.detach().reshape(-1).double().tolist()
            try:
                _check_values(values, name, PARAM_RULES[name], indexed=len(values) != 1)
            except ValueError as error:
                raise ValueError(f"{op}: {error}") from None
    if lo.device.type == "cpu" and hi.device.type == "cpu":
        try:
            _check_order(lo.detach().reshape(-1).double().tolist(), hi.detach().reshape(-1).double().tolist())
        except ValueError as error:
            raise ValueError(f"{op}: {error}") from None


# ------------------------------------------------------------------------ mirrors of the C++ prologues


def _same_device(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    torch._check_value(
        t.device == ref.device,
        lambda: f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; every tensor argument must be "
        "on one device",
    )


def check_step_args(
    op: str,
    x_adv: torch.Tensor,
    grad: torch.Tensor | None,
    x: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor | None,
    scale: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    active: torch.Tensor | None,
) -> None:
    """Checks 1-3 of ``csrc/common/step_args.h`` (devices, dtypes, shapes) on tensors or fake tensors;
    ``grad`` and ``alpha`` are None for ``random_init_``."""
    named = [("grad", grad), ("x", x), ("eps", eps), ("alpha", alpha), ("scale", scale), ("lo", lo), ("hi", hi),
             ("active", active)]
    present = [(n, t) for n, t in named if t is not None]
    for name, t in present:  # 1. devices
        _same_device(op, name, t, "x_adv", x_adv)

    # 2. dtypes
    if x_adv.device.type == "cpu":
        torch._check_type(
            x_adv.dtype in (torch.float32, torch.float64, torch.bfloat16),
            lambda: f"{op}: on CPU x_adv must be float32, float64 or bfloat16, got {x_adv.dtype} "
            "(float16 is supported on CUDA only)",
        )
    else:
        torch._check_type(
            x_adv.dtype in FEATURE_DTYPES,
            lambda: f"{op}: on {x_adv.device.type} x_adv must be float32, float64, float16 or bfloat16, "
            f"got {x_adv.dtype}",
        )
    for name, t in (("x", x), ("grad", grad)):
        if t is not None:
            torch._check_type(
                t.dtype == x_adv.dtype,
                lambda t=t, name=name: f"{op}: {name} has dtype {t.dtype} but x_adv has dtype {x_adv.dtype}",
            )
    for name, t in (("eps", eps), ("alpha", alpha), ("scale", scale), ("lo", lo), ("hi", hi)):
        if t is not None:
            torch._check_type(t.is_floating_point(),
                              lambda t=t, name=name: f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if active is not None:
        torch._check_type(active.dtype == torch.bool, lambda: f"{op}: active must be a bool tensor, got {active.dtype}")

    # 3. shapes
    torch._check_value(
        x_adv.dim() >= 2,
        lambda: f"{op}: x_adv must have a batch and a channel dimension [B, C, ...], got shape {tuple(x_adv.shape)}",
    )
    for name, t in (("x", x), ("grad", grad)):
        if t is not None:
            torch._check_value(
                t.shape == x_adv.shape,
                lambda t=t, name=name: f"{op}: {name} has shape {tuple(t.shape)} but x_adv has shape "
                f"{tuple(x_adv.shape)}",
            )
    B, C = x_adv.shape[0], x_adv.shape[1]
    for name, t, n, what in (("eps", eps, B, "sample"), ("alpha", alpha, B, "sample"), ("scale", scale, C, "channel"),
                             ("lo", lo, C, "channel"), ("hi", hi, C, "channel")):
        if t is not None:
            torch._check_value(
                t.numel() == n or t.numel() == 1,
                lambda t=t, name=name, n=n, what=what: f"{op}: {name} must have one element or one per {what} ({n}), "
                f"got shape {tuple(t.shape)}",
            )
    if active is not None:
        torch._check_value(
            active.numel() == B,
            lambda: f"{op}: active must have one element per sample ({B}), got shape {tuple(active.shape)}",
        )


def _may_overlap_itself(t: torch.Tensor) -> bool:
    """The rule of ``check_no_self_overlap`` in ``csrc/common/checks.h``: with the dimensions of size > 1
    sorted by stride, each stride must exceed the largest offset the smaller dimensions reach."""
    if t.numel() == 0:
        return False
    reach = 0
    for stride, size in sorted((abs(st), sz) for sz, st in zip(t.shape, t.stride(), strict=True) if sz > 1):
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    low = sum(st * (sz - 1) for sz, st in zip(t.shape, t.stride(), strict=True) if st < 0)
    high = sum(st * (sz - 1) for sz, st in zip(t.shape, t.stride(), strict=True) if st > 0)
    return t.data_ptr() + low * t.element_size(), t.data_ptr() + (high + 1) * t.element_size()


def _share_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The rule of ``check_no_shared_memory`` in ``csrc/common/checks.h``: one storage and intersecting
    byte ranges."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    a0, a1 = _byte_span(a)
    b0, b1 = _byte_span(b)
    return a0 < b1 and b0 < a1


def check_step_memory(op: str, x_adv: torch.Tensor, **inputs: torch.Tensor | None) -> None:
    """Check 4 of ``csrc/common/step_args.h`` on real tensors: ``x_adv`` overlaps neither itself nor
    any input (given by name). Meta tensors have no memory: nothing to check."""
    if x_adv.device.type == "meta":
        return
    if _may_overlap_itself(x_adv):
        raise ValueError(f"{op}: x_adv has elements that share memory (shape {tuple(x_adv.shape)}, strides "
                         f"{x_adv.stride()}, e.g. an expanded view); it is written in place, so pass a tensor whose "
                         "elements are distinct (x_adv.clone())")
    for name, t in inputs.items():
        if t is not None and _share_memory(x_adv, t):
            raise ValueError(f"{op}: x_adv shares memory with {name} (two views of one buffer, or the same tensor); "
                             f"x_adv is written in place while {name} is read, so pass separate tensors "
                             "(e.g. x_adv.clone())")


def _feature_dtype(op: str, name: str, t: torch.Tensor) -> None:
    torch._check_type(t.dtype in FEATURE_DTYPES,
                      lambda: f"{op}: {name} must be float32, float64, bfloat16 or float16, got {t.dtype}")


def _feature_shape(op: str, name: str, t: torch.Tensor) -> None:
    torch._check_value(t.dim() == 2, lambda: f"{op}: {name} must be a 2-D [N, D] tensor, got shape {tuple(t.shape)}")


def check_class_stats_args(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    """``ClassStatsArgs`` of ``csrc/common/stats_args.h`` (devices, dtypes, shapes, num_classes)."""
    op = "class_feature_stats"
    _same_device(op, "labels", labels, "features", features)
    _feature_dtype(op, "features", features)
    torch._check_type(labels.dtype == torch.int64, lambda: f"{op}: labels must be int64, got {labels.dtype}")
    _feature_shape(op, "features", features)
    torch._check_value(labels.dim() == 1,
                       lambda: f"{op}: labels must be a 1-D [N] tensor, got shape {tuple(labels.shape)}")
    torch._check_value(
        labels.shape[0] == features.shape[0],
        lambda: f"{op}: labels has {labels.shape[0]} entries but features has {features.shape[0]} rows",
    )
    torch._check_value(num_classes >= 1, lambda: f"{op}: num_classes must be at least 1, got {num_classes}")


def check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Every label in ``[0, num_classes)`` (reads the labels: real tensors only); the kernels' message."""
    bad = (labels < 0) | (labels >= num_classes)
    if labels.numel() and bool(bad.any()):
        first = int(bad.int().argmax())
        raise ValueError(f"class_feature_stats: labels must be in [0, num_classes) = [0, {num_classes}), "
                         f"got labels[{first}] = {int(labels[first])}")


def check_feature_pair(op: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor, same_width: bool) -> None:
    """``FeaturePairArgs`` of ``csrc/common/stats_args.h``: two feature matrices of one dtype and device,
    of one shape (``same_width``) or one number of rows."""
    _same_device(op, b_name, b, a_name, a)
    _feature_dtype(op, a_name, a)
    _feature_dtype(op, b_name, b)
    torch._check_type(a.dtype == b.dtype,
                      lambda: f"{op}: {b_name} has dtype {b.dtype} but {a_name} has dtype {a.dtype}")
    _feature_shape(op, a_name, a)
    _feature_shape(op, b_name, b)
    if same_width:
        torch._check_value(
            a.shape == b.shape,
            lambda: f"{op}: {b_name} has shape {tuple(b.shape)} but {a_name} has shape {tuple(a.shape)}",
        )
    else:
        torch._check_value(a.shape[0] == b.shape[0],
                           lambda: f"{op}: {b_name} has {b.shape[0]} rows but {a_name} has {a.shape[0]}")


def check_square_proposal_args(current: torch.Tensor, low: torch.Tensor, high: torch.Tensor, rows: torch.Tensor,
                               top: torch.Tensor, left: torch.Tensor, side: int, up: torch.Tensor, *,
                               values: bool = True) -> None:
    """The checks of ``square_linf_proposal`` (``check_args`` of ``csrc/cpu/square_proposal.cpp``): the
    fake kernel's and the twin's, with the kernel's messages. Index values are checked on the CPU only,
    and only with ``values`` (a fake kernel has none)."""
    op = "square_linf_proposal"
    for name, t in (("low", low), ("high", high), ("rows", rows), ("top", top), ("left", left), ("up", up)):
        _same_device(op, name, t, "current", current)
    dtype = current.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: current must be float32 or float64, got {dtype}")
    for name, t in (("low", low), ("high", high)):
        if t.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but current has dtype {dtype}")
    if current.dim() != 4:
        raise ValueError(f"{op}: current must be a batch of images [N, C, H, W], got shape {list(current.shape)}")
    for name, t in (("low", low), ("high", high)):
        if t.shape != current.shape:
            raise ValueError(f"{op}: {name} has shape {list(t.shape)} but current has shape {list(current.shape)}")
    if rows.dtype != torch.int64:
        raise TypeError(f"{op}: rows must be int64, got {rows.dtype}")
    if rows.dim() != 1:
        raise ValueError(f"{op}: rows must be 1-D, got shape {list(rows.shape)}")
    n = rows.shape[0]
    for name, t in (("top", top), ("left", left)):
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"{op}: {name} must have shape [{n}] (one per row of rows), got {list(t.shape)}")
    if up.dtype != torch.bool:
        raise TypeError(f"{op}: up must be bool, got {up.dtype}")
    channels, height, width = current.shape[1:]
    if up.dim() != 3 or up.shape[0] != n or up.shape[1] < 1 or up.shape[2] != channels:
        raise ValueError(f"{op}: up must have shape [{n}, draws >= 1, {channels}] (rows x draws x channels), got "
                         f"{list(up.shape)}")
    if not 1 <= side <= min(height, width):
        raise ValueError(f"{op}: side must be in [1, {min(height, width)}], got {side}")
    if values and current.device.type == "cpu":
        for name, t, high_value in (("rows", rows, current.shape[0] - 1), ("top", top, height - side),
                                    ("left", left, width - side)):
            bad = ((t < 0) | (t > high_value)).nonzero()
            if bad.numel():
                raise ValueError(f"{op}: {name} must be in [0, {high_value}], got {int(t[bad[0, 0]])}")


def check_box_projection_args(w: torch.Tensor, c: torch.Tensor, up: torch.Tensor, down: torch.Tensor,
                              norm: str) -> None:
    """The checks of ``box_hyperplane_projection`` (``check_args`` of ``csrc/cpu/box_projection.cpp``): the
    fake kernel's and the twin's, with the kernel's messages."""
    op = "box_hyperplane_projection"
    for name, t in (("c", c), ("up", up), ("down", down)):
        _same_device(op, name, t, "w", w)
    dtype = w.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: w must be float32 or float64, got {dtype}")
    for name, t in (("c", c), ("up", up), ("down", down)):
        if t.dtype != dtype:
            raise TypeError(f"{op}: {name} has dtype {t.dtype} but w has dtype {dtype}")
    if w.dim() != 2:
        raise ValueError(f"{op}: w must be 2-D [N, D], got shape {list(w.shape)}")
    if c.dim() != 1 or c.shape[0] != w.shape[0]:
        raise ValueError(f"{op}: c must have shape [{w.shape[0]}], got {list(c.shape)}")
    for name, t in (("up", up), ("down", down)):
        if t.shape != w.shape:
            raise ValueError(f"{op}: {name} has shape {list(t.shape)} but w has shape {list(w.shape)}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"{op}: norm must be 'linf' or 'l2', got '{norm}'")
