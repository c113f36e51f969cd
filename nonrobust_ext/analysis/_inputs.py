"""What enters the analyses, checked once: data sets and their batches, models and devices, attacks,
feature callables, image tensors and representation matrices (private to :mod:`nonrobust_ext.analysis`).

Every public analysis reads its inputs through these functions, so each kind of bad input is refused
in one place and the same way everywhere (the rules of :mod:`nonrobust_ext._validate`):

- a wrong type is a ``TypeError``, a wrong value a ``ValueError``, and the message starts with the
  argument's name (``data``, ``x``, ``model``, ``device``, ...);
- NaN and Inf are refused in images (every batch, as it is drawn), in labels' stead (labels must be
  integers), in adversarial inputs, in the logits and features a model returns, and in representation
  matrices;
- ``x`` and ``y`` of different lengths are refused, never broadcast;
- nothing is computed over zero samples: the batch iterators raise when a data set held no sample, so
  no analysis can divide by a count of 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch

from .. import _validate
from .._validate import (  # noqa: F401  (check_device, check_images, resolve_device: re-exported for the analyses)
    check_device,
    check_finite,
    check_images,
    check_int,
    check_reals,
    check_tensor,
    resolve_device,
)
from ..attacks._common import LogitsSelector, select_logits
from ..attacks.registry import ATTACKS
from ..data import TensorData

AttackFn = Callable[..., torch.Tensor]
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
#: Labelled data: a :class:`TensorData`, a pair ``(x, y)`` of tensors, or an iterable of ``(x, y, ...)`` batches.
Data = Union[TensorData, tuple[torch.Tensor, torch.Tensor], Iterable[Any]]
#: Unlabelled inputs: a tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y, ...)`` batches.
InputData = Union[torch.Tensor, Iterable[Any]]


# ------------------------------------------------------------------------------------------- models, devices


def check_model(model: object, name: str = "model") -> None:
    """``model`` is callable (an ``nn.Module`` or a function of a batch)."""
    if not callable(model):
        raise TypeError(f"{name} must be a callable model (an nn.Module), got {type(model).__name__}")


def check_module(model: object, name: str = "model") -> torch.nn.Module:
    """``model`` is an ``nn.Module`` (needed where submodules are looked up by name)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


# -------------------------------------------------------------------------------------------- images, labels


def check_labels(y: object, name: str, n: int | None = None) -> torch.Tensor:
    """Integer class labels ``[n]``, each >= 0, as int64 (the analyses index with them)."""
    return _validate.check_labels(y, name, n=n, nonnegative=True).long()


def check_labels_below(y: torch.Tensor, num_classes: int, name: str, what: str) -> None:
    """Every label is a class of ``what`` (``[0, num_classes)``)."""
    if y.numel() and int(y.max()) >= num_classes:
        raise ValueError(f"{name} has label {int(y.max())}, outside the {num_classes} classes of {what} "
                         f"(labels must be in [0, {num_classes}))")


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` an int >= 1."""
    return check_int(batch_size, "batch_size", 1)


def check_bounds(bounds: object, name: str = "bounds") -> tuple[float, float]:
    """``None`` (unbounded: ``(-inf, inf)``) or a pair ``(lo, hi)`` of finite numbers with ``lo < hi``."""
    if bounds is None:
        return -math.inf, math.inf
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(f"{name} must be None or a pair (lo, hi) of numbers, got {bounds!r}")
    lo, hi = check_reals(bounds, name)
    if not lo < hi:
        raise ValueError(f"{name} must have lo < hi, got ({lo:g}, {hi:g})")
    return lo, hi


# ------------------------------------------------------------------------------------------------- data sets


def _checked_batch(x: object, y: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = check_images(x, f"{name} images")
    y = check_labels(y, f"{name} labels", x.shape[0])
    return x, y


def labelled_batches(data: Data, batch_size: int, name: str = "data") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of a :class:`TensorData`, a pair of tensors or an iterable of batches, each checked.

    Each batch's images are floating point and finite, its labels integers >= 0, one per image. Empty
    batches are skipped; a data set that yields no sample at all raises ``ValueError`` when the
    iteration ends, so a caller never divides by zero samples.

    Raises:
        TypeError: ``data`` is not one of the forms above; a batch is not ``(x, y, ...)`` tensors.
        ValueError: NaN/Inf images, lengths of x and y that differ, negative labels, no samples.
    """
    batch_size = check_batch_size(batch_size)
    if isinstance(data, TensorData):
        data = (data.x, data.y)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.dim() < 2:
            raise ValueError(f"{name} must be a pair (x [N, C, ...], y [N]), got x of shape {tuple(x.shape)}")
        check_labels(y, f"{name} labels", x.shape[0])  # the lengths, before any work is done
        return _counted(((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)),
                        name)
    if isinstance(data, (str, bytes, torch.Tensor)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a TensorData, a pair of tensors (x, y) or an iterable of (x, y) batches, "
                        f"got {type(data).__name__}")
    return _counted(_split_items(data, name), name)


def _split_items(data: Iterable[Any], name: str) -> Iterator[tuple[Any, Any]]:
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"{name} must yield (x, y) batches, e.g. a DataLoader over (image, label) pairs; "
                            f"got an item of type {type(batch).__name__}")
        yield batch[0], batch[1]


def _counted(batches: Iterable[tuple[Any, Any]], name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    total = 0
    for x, y in batches:
        x, y = _checked_batch(x, y, name)
        if len(y) == 0:
            continue
        total += len(y)
        yield x, y
    if total == 0:
        raise ValueError(f"{name} holds no samples: nothing to compute over")


def input_batches(data: InputData, batch_size: int, name: str = "data") -> Iterator[torch.Tensor]:
    """The input batches of a tensor (split) or of an iterable of ``x`` or ``(x, y, ...)`` items, each checked
    (floating point, finite, at least 1-D); empty batches skipped; ``ValueError`` when there was no input."""
    batch_size = check_batch_size(batch_size)
    if isinstance(data, torch.Tensor):
        if data.ndim == 0:
            raise ValueError(f"{name} must be a batch [N, ...], got a scalar tensor")
        return _counted_inputs(data.split(batch_size), name)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a tensor or an iterable of (x, y) batches, got {type(data).__name__}")
    return _counted_inputs((item[0] if isinstance(item, (tuple, list)) and item else item for item in data), name)


def _counted_inputs(batches: Iterable[Any], name: str) -> Iterator[torch.Tensor]:
    total = 0
    for xb in batches:
        if not isinstance(xb, torch.Tensor):
            raise TypeError(f"{name} must yield tensors or (x, y) tuples, got an item of type {type(xb).__name__}")
        xb = check_images(xb, f"{name} inputs", min_dim=1)
        if len(xb) == 0:
            continue
        total += len(xb)
        yield xb
    if total == 0:
        raise ValueError(f"{name} holds no data (no inputs): nothing to compute over")


def materialise(data: Data, name: str = "data") -> TensorData:
    """The whole of ``data`` as one in-memory :class:`TensorData` (its own classes kept, or ``class<k>``),
    checked as :func:`labelled_batches` checks it."""
    if isinstance(data, TensorData):
        for _ in labelled_batches(data, 1 << 30, name):  # one pass of the checks; the set is kept as it is
            pass
        return data
    xs, ys = [], []
    for x, y in labelled_batches(data, 1 << 30, name):
        xs.append(x.detach())
        ys.append(y.to(x.device))
    x, y = torch.cat(xs), torch.cat(ys)
    return TensorData(x, y, [f"class{i}" for i in range(int(y.max()) + 1)])


def labelled_pair(data: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A :class:`TensorData` or a pair ``(x, y)`` as two checked tensors (x floating, finite; y labels, same length;
    at least one sample)."""
    if isinstance(data, TensorData):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise TypeError(f"{name} must be a TensorData or a pair (x, y), got {type(data).__name__}")
    x = check_images(x, f"{name} images")
    y = check_labels(y, f"{name} labels", x.shape[0])
    if len(y) == 0:
        raise ValueError(f"{name} holds no samples: nothing to compute over")
    return x, y


# ---------------------------------------------------------------------------------------------------- attacks


def resolve_attack(attack: object, logits: LogitsSelector, attack_kwargs: dict[str, Any]
                   ) -> tuple[AttackFn, dict[str, Any]]:
    """The attack function and its keyword arguments (``logits`` passed on to named attacks)."""
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"attack must be one of {sorted(ATTACKS)} or a callable, got {attack!r}")
        return ATTACKS[attack], {"logits": logits, **attack_kwargs}
    if callable(attack):
        return attack, dict(attack_kwargs)
    raise TypeError(f"attack must be a name or a callable attack(model, x, y, eps=..., ...), "
                    f"got {type(attack).__name__}")


def attack_name(attack: str | AttackFn) -> str:
    return attack if isinstance(attack, str) else getattr(attack, "__name__", type(attack).__name__)


def run_attack(attack_fn: AttackFn, model: Any, x: torch.Tensor, y: torch.Tensor, eps: float,
               kwargs: dict[str, Any]) -> torch.Tensor:
    """``attack_fn(model, x, y, eps=eps, **kwargs)`` detached (``x`` itself at ``eps = 0``), checked: an attack
    returns finite inputs shaped like ``x`` (a user callable returning NaN would poison every statistic)."""
    if eps == 0:
        return x
    x_adv = attack_fn(model, x, y, eps=eps, **kwargs)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise ValueError(f"attack must return a tensor shaped like its input {tuple(x.shape)}, got "
                         f"{type(x_adv).__name__} {tuple(getattr(x_adv, 'shape', ()))}")
    return check_finite(x_adv.detach(), "attack output")


def logits_of(model: Callable[..., Any], x: torch.Tensor, selector: LogitsSelector,
              y: torch.Tensor | None = None) -> torch.Tensor:
    """The model's logits ``[B, K]`` on ``x`` (no grad), finite; with ``y``, every label a class of the model."""
    with torch.no_grad():
        z = select_logits(model(x), selector)
    if z.dim() != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(f"the model's logits must be [B, num_classes] with B={x.shape[0]}, got {tuple(z.shape)}")
    check_finite(z, "the model's logits")
    if y is not None:
        check_labels_below(y, z.shape[1], "data labels", "the model")
    return z


# ---------------------------------------------------------------------------------------------------- features


def feature_fn(model: object, features: FeatureFn | None) -> FeatureFn:
    """``features`` if given, else ``model.forward_features`` (``TypeError`` naming both when neither)."""
    if features is not None:
        if not callable(features):
            raise TypeError(f"features must be a callable x -> [B, D], got {type(features).__name__}")
        return features
    fn = getattr(model, "forward_features", None)
    if fn is None or not callable(fn):
        raise TypeError(
            f"{type(model).__name__} has no forward_features(x): pass features=<callable x -> [B, D]> "
            "(e.g. the model's body up to its penultimate layer)"
        )
    return fn


def embed(fn: FeatureFn, x: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """``fn(x)`` flattened to ``[B, D]`` (D >= 1), every value finite."""
    with torch.set_grad_enabled(grad):
        out = fn(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"features must return a tensor [B, D], got {type(out).__name__}")
    if out.dim() < 1 or out.shape[0] != x.shape[0]:
        raise ValueError(f"features must return one row per sample ({x.shape[0]}), got shape {tuple(out.shape)}")
    out = out.reshape(out.shape[0], -1)
    if out.shape[1] == 0:
        raise ValueError("features returned no feature (shape [B, 0]): nothing to compute over")
    return check_finite(out, "features output")


# ------------------------------------------------------------------------------------- representation matrices

# A representation whose centred sum of squares is below this fraction of its raw sum of squares is constant up to
# float64 rounding of its mean (relative spread ~1e-14): similarity to it is undefined.
_CONSTANT_RTOL = 1e-28


def as_matrix(t: Any, name: str) -> torch.Tensor:
    """``t`` as a finite float64 matrix ``[N, D]`` (numpy arrays and nested lists are converted)."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"{name} must be a tensor [N, D], got {type(t).__name__}") from e
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix [N, D] (one row per input), got shape {tuple(t.shape)}"
            + ("; use reshape(-1, 1) for a single feature" if t.ndim == 1 else "")
        )
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {t.dtype}")
    return check_finite(t.to(torch.float64), name)


def matrix_pair(x: Any, y: Any, *, min_n: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both inputs as finite float64 matrices on x's device, with the same number of rows (at least ``min_n``)
    and at least one column each."""
    x = as_matrix(x, "x")
    y = as_matrix(y, "y").to(x.device)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same inputs (rows): x has N={x.shape[0]}, y has N={y.shape[0]}"
        )
    if x.shape[0] < min_n:
        raise ValueError(f"x: {what} needs at least {min_n} samples (rows), got N={x.shape[0]}")
    for name, mat in (("x", x), ("y", y)):
        if mat.shape[1] == 0:
            raise ValueError(f"{name} needs at least one feature (column), got shape {tuple(mat.shape)}")
    return x, y


def center(x: torch.Tensor, name: str) -> torch.Tensor:
    """Column-centred copy; refuses a representation that is constant over the samples."""
    xc = x - x.mean(0, keepdim=True)
    ss_c = float((xc * xc).sum())
    ss = float((x * x).sum())
    if ss_c <= _CONSTANT_RTOL * ss or ss_c == 0.0:
        raise ValueError(f"{name} is constant over the N samples (zero variance): its similarity is undefined")
    return xc


# -------------------------------------------------------------------------------------------------- reporting


def pyplot_figure() -> Any:
    """matplotlib's ``Figure`` class (no pyplot global state, no backend switch), or a clear ImportError."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return Figure


def nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


__all__: list[str] = []  # private module: nothing here is public API
