r"""Feature usefulness and robustness (Ilyas et al., 2019, "Adversarial examples are not bugs, they are
features").

A feature is a function ``f`` from inputs to reals; here the coordinates of a model's penultimate
embedding (``model.forward_features``) or of any user-supplied ``features`` callable. For a binary task
with labels ``y in {-1, +1}``, Ilyas et al. call ``f`` *useful* when ``E[y f(x)]`` is large (with ``f``
standardised), and *robustly useful* when it stays large under adversarial perturbation of ``x``.

Multi-class data is read one-vs-rest: for each class ``c`` the task ``y_c = +1`` (label ``c``) against
``y_c = -1`` (any other label). Ilyas et al.'s binary tasks are balanced, so each one-vs-rest task is
reweighted to be balanced too (the positives and the negatives each carry half the weight), and the
feature is standardised on clean data under that balanced weighting. With ``mu_+ / mu_-`` the mean of
feature ``d`` on the positives / negatives and ``sigma`` its balanced standard deviation on clean data::

    usefulness[c, d] = E_bal[y_c * (f_d(x) - m) / sigma] = (mu_+ - mu_-) / (2 * sigma)

which lies in ``[-1, 1]``: 1 for a feature equal to the label sign ``y_c``, about 0 for a feature
independent of the label. Under attack the same clean standardisation is applied to the features of
the adversarial inputs, so ``adversarial[c, d] = (mu_+^adv - mu_-^adv) / (2 * sigma)``.

The worst case of Ilyas et al.'s definition (an infimum over perturbations *per feature*) would need one
attack per feature and class; here the perturbation is the one an attack on the *model* finds (PGD on
its classification loss by default) -- the perturbation that matters for the model's robustness, and
the same one for every feature.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import torch

from .._params import check_int as _check_int
from .._progress import progress_bar
from ..attacks._common import LogitsSelector, eval_mode, select_logits
from ..attacks.registry import ATTACKS
from ..data import TensorData

AttackFn = Callable[..., torch.Tensor]
FeatureFn = Callable[[torch.Tensor], torch.Tensor]
Data = Union[TensorData, tuple[torch.Tensor, torch.Tensor], Iterable[Any]]


# --------------------------------------------------------------------------------------------------
# Shared by the analysis modules (private).
# --------------------------------------------------------------------------------------------------




def _check_number(value: object, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value:g}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value:g}")
    return value


def _check_model(model: object, name: str = "model") -> None:
    if not callable(model):
        raise TypeError(f"{name} must be a callable model (an nn.Module), got {type(model).__name__}")


def _device_of(model: object, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else where the model's parameters (or buffers) are, else the CPU."""
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return torch.device("cpu")


def _batches(data: Data, batch_size: int, name: str = "data") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of a :class:`TensorData`, a pair of tensors or an iterable of batches."""
    _check_int(batch_size, "batch_size", 1)
    if isinstance(data, TensorData):
        data = (data.x, data.y)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
            raise ValueError(f"{name} must be a pair (x [N, C, ...], y [N]), got shapes {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size))
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a TensorData, a pair of tensors (x, y) or an iterable of (x, y) batches, "
                        f"got {type(data).__name__}")
    return _iterate_batches(data, name)


def _iterate_batches(data: Iterable[Any], name: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in data:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError(f"{name} must yield (x, y) batches, e.g. a DataLoader over (image, label) pairs")
        yield batch[0], batch[1]


def _materialise(data: Data, name: str = "data") -> TensorData:
    """The whole of ``data`` as one in-memory :class:`TensorData` (its own classes kept, or ``class<k>``)."""
    if isinstance(data, TensorData):
        return data
    xs, ys = [], []
    for x, y in _batches(data, 1 << 30, name):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"{name} must hold tensors, got {type(x).__name__} and {type(y).__name__}")
        xs.append(x.detach())
        ys.append(y.detach().long().to(x.device))
    if not xs:
        raise ValueError(f"{name} holds no samples")
    x, y = torch.cat(xs), torch.cat(ys)
    k = int(y.max()) + 1 if y.numel() else 0
    return TensorData(x, y, [f"class{i}" for i in range(k)])



def _resolve_attack(attack: str | AttackFn, logits: LogitsSelector, attack_kwargs: dict[str, Any]
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


def _attack_name(attack: str | AttackFn) -> str:
    return attack if isinstance(attack, str) else getattr(attack, "__name__", type(attack).__name__)


def _logits(model: Callable[..., Any], x: torch.Tensor, selector: LogitsSelector) -> torch.Tensor:
    with torch.no_grad():
        return select_logits(model(x), selector)


def _feature_fn(model: object, features: FeatureFn | None) -> FeatureFn:
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


def _embed(fn: FeatureFn, x: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        out = fn(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"features must return a tensor [B, D], got {type(out).__name__}")
    if out.dim() < 1 or out.shape[0] != x.shape[0]:
        raise ValueError(f"features must return one row per sample ({x.shape[0]}), got shape {tuple(out.shape)}")
    return out.reshape(out.shape[0], -1)


def _pyplot_figure() -> Any:
    """A matplotlib ``Figure`` (no pyplot global state, no backend switch), or a clear ImportError."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return Figure


def _nan_to_none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


# --------------------------------------------------------------------------------------------------
# Feature usefulness.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FeatureUsefulness:
    """What :func:`feature_usefulness` measured.

    Attributes:
        clean: ``[K, D]`` usefulness of feature ``d`` for the one-vs-rest task of class ``c`` on clean inputs.
        adversarial: ``[K, D]`` the same on the adversarial inputs (clean standardisation).
        ranking: the (class, feature) pairs useful on clean data (``clean >= threshold``), most useful
            first, each a dict ``{"class", "feature", "clean", "adversarial", "robust"}`` where
            ``robust`` says the pair is still useful under attack (``adversarial >= robust_threshold``).
        robust_share: the share of the total clean usefulness of those pairs that survives the attack:
            ``sum(clamp(adversarial, 0, clean)) / sum(clean)`` over the useful pairs (NaN when no pair
            is useful).
        threshold, robust_threshold: the usefulness thresholds used.
        eps: the attack radius.
        attack: the attack's name.
        class_counts: samples per class (a class without samples has usefulness 0 throughout).
        num_samples: samples evaluated.
    """

    clean: torch.Tensor
    adversarial: torch.Tensor
    ranking: list[dict[str, Any]]
    robust_share: float
    threshold: float
    robust_threshold: float
    eps: float
    attack: str
    class_counts: list[int]
    num_samples: int

    @property
    def robust_useful(self) -> list[dict[str, Any]]:
        """The useful pairs that stay useful under attack, most useful (clean) first."""
        return [r for r in self.ranking if r["robust"]]

    @property
    def non_robust_useful(self) -> list[dict[str, Any]]:
        """The useful pairs that the attack makes useless, most useful (clean) first."""
        return [r for r in self.ranking if not r["robust"]]

    def summary(self, top: int = 5) -> dict[str, Any]:
        """Plain counts and shares (JSON-ready), with the ``top`` pairs of each kind."""
        useful = len(self.ranking)
        robust = len(self.robust_useful)
        clean_total = float(sum(r["clean"] for r in self.ranking))
        return {
            "num_samples": self.num_samples,
            "num_classes": int(self.clean.shape[0]),
            "num_features": int(self.clean.shape[1]),
            "attack": self.attack,
            "eps": self.eps,
            "threshold": self.threshold,
            "robust_threshold": self.robust_threshold,
            "num_useful": useful,
            "num_robust_useful": robust,
            "num_non_robust_useful": useful - robust,
            "robust_fraction": robust / useful if useful else None,
            "robust_share": _nan_to_none(self.robust_share),
            "clean_usefulness_total": clean_total,
            "mean_abs_clean": float(self.clean.abs().mean()) if self.clean.numel() else 0.0,
            "mean_abs_adversarial": float(self.adversarial.abs().mean()) if self.adversarial.numel() else 0.0,
            "top_robust_useful": self.robust_useful[:top],
            "top_non_robust_useful": self.non_robust_useful[:top],
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything as plain data (the ``[K, D]`` matrices as nested lists)."""
        return {
            **self.summary(top=0),
            "clean": self.clean.tolist(),
            "adversarial": self.adversarial.tolist(),
            "ranking": list(self.ranking),
            "class_counts": list(self.class_counts),
        }


class _ClassMoments:
    """Per-class sums of a feature matrix (float64), grown as larger labels appear."""

    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.count: torch.Tensor | None = None
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, y: torch.Tensor, **values: torch.Tensor) -> None:
        k = max(self.k, int(y.max()) + 1 if y.numel() else 0)
        d = next(iter(values.values())).shape[1]
        width = d if self.count is None else next(iter(self.sums.values())).shape[1]
        if any(v.shape[1] != width for v in values.values()):
            raise ValueError(f"features must have the same width for every batch and input, got "
                             f"{sorted({v.shape[1] for v in values.values()} | {width})}")
        if self.count is None:
            self.count = torch.zeros(k, dtype=torch.float64)
            self.sums = {name: torch.zeros(k, d, dtype=torch.float64) for name in values}
        elif k > self.count.shape[0]:
            grow = k - self.count.shape[0]
            self.count = torch.cat([self.count, torch.zeros(grow, dtype=torch.float64)])
            self.sums = {n: torch.cat([s, torch.zeros(grow, d, dtype=torch.float64)]) for n, s in self.sums.items()}
        self.k = k
        y = y.cpu()
        self.count.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        for name, v in values.items():
            self.sums[name].index_add_(0, y, v.detach().cpu().double())


def usefulness_from_moments(
    count: torch.Tensor, sum_clean: torch.Tensor, sumsq_clean: torch.Tensor, sum_other: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Balanced one-vs-rest usefulness from per-class moments (see the module docstring).

    Args:
        count: ``[K]`` samples per class.
        sum_clean, sumsq_clean: ``[K, D]`` per-class sums of the clean features and of their squares.
        sum_other: optional ``[K, D]`` per-class sums of the features of other inputs (adversarial),
            scored with the clean standardisation.

    Returns:
        ``(clean [K, D], other [K, D] or None)``; rows of classes without positives or negatives, and
        features with zero clean variance, are 0.
    """
    n = count[:, None]
    total_n = count.sum()
    n_neg = total_n - n
    ok = (n > 0) & (n_neg > 0)
    safe_n, safe_neg = n.clamp_min(1), n_neg.clamp_min(1)
    mu_pos = sum_clean / safe_n
    mu_neg = (sum_clean.sum(0, keepdim=True) - sum_clean) / safe_neg
    sq_pos = sumsq_clean / safe_n
    sq_neg = (sumsq_clean.sum(0, keepdim=True) - sumsq_clean) / safe_neg
    mean_bal = 0.5 * (mu_pos + mu_neg)
    var_bal = (0.5 * (sq_pos + sq_neg) - mean_bal.square()).clamp_min(0)
    sigma = var_bal.sqrt()
    # A constant feature (dead unit) is useless; guard the division relative to the feature's scale.
    tiny = 1e-12 * (0.5 * (sq_pos + sq_neg)).sqrt().clamp_min(1e-30)
    valid = ok & (sigma > tiny)
    denom = torch.where(valid, 2 * sigma, torch.ones_like(sigma))
    clean = torch.where(valid, (mu_pos - mu_neg) / denom, torch.zeros_like(sigma))
    other = None
    if sum_other is not None:
        a_pos = sum_other / safe_n
        a_neg = (sum_other.sum(0, keepdim=True) - sum_other) / safe_neg
        other = torch.where(valid, (a_pos - a_neg) / denom, torch.zeros_like(sigma))
    return clean, other


def feature_usefulness(
    model: torch.nn.Module,
    data: Data,
    *,
    attack: str | AttackFn = "pgd",
    eps: float,
    features: FeatureFn | None = None,
    threshold: float = 0.1,
    robust_threshold: float | None = None,
    num_classes: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    adversarial: torch.Tensor | None = None,
    **attack_kwargs: Any,
) -> FeatureUsefulness:
    r"""Usefulness of every embedding feature for every class, on clean and on adversarial inputs.

    For each batch the features of the clean inputs and of their adversarial versions
    (``attack(model, x, y, eps=eps, **attack_kwargs)``, untargeted on the true labels, every sample
    attacked) are accumulated per class; the balanced one-vs-rest usefulness is computed at the end
    (see the module docstring for the formula)::

        usefulness[c, d] = (mu_+ - mu_-) / (2 sigma)           (clean features, balanced std sigma)
        adversarial[c, d] = (mu_+^adv - mu_-^adv) / (2 sigma)  (same clean sigma)

    A pair ``(c, d)`` is *useful* when ``usefulness >= threshold``, *robustly useful* when moreover
    ``adversarial >= robust_threshold`` (default ``threshold``), non-robustly useful otherwise.
    (A feature useful with the opposite sign is the feature ``-f_d``: it shows as a negative entry and
    is not ranked.)

    Args:
        model: the classifier the attack runs on (evaluated in eval mode, its modes restored).
        data: a :class:`~nonrobust_ext.data.TensorData`, a pair ``(x, y)`` or an iterable of batches.
        attack: a name of :data:`nonrobust_ext.attacks.registry.ATTACKS` (``"pgd"``, ...) or a callable
            ``attack(model, x, y, eps=..., **attack_kwargs)`` returning the adversarial batch.
        eps: the attack radius (>= 0; 0 scores the clean inputs twice).
        features: ``callable(x) -> [B, D]`` (further dimensions are flattened); default
            ``model.forward_features``.
        threshold: usefulness above which a pair counts as useful (``rho`` of Ilyas et al.).
        robust_threshold: adversarial usefulness above which a useful pair counts as robust
            (``gamma``); default ``threshold``.
        num_classes: K; default the data's class count (``TensorData``) or the largest label + 1.
        batch_size: batch size when ``data`` is a set or a pair of tensors.
        device: where to evaluate (default: the model's device); batches are moved there.
        logits: where the logits are in the model's output (passed to named attacks).
        progress: show a progress bar (tqdm).
        adversarial: the adversarial inputs, already crafted (e.g. once for several analyses), one per
            sample of ``data`` (a pair or ``TensorData``); no attack runs then, and ``eps`` only labels
            the result.
        attack_kwargs: passed to the attack (e.g. ``steps=10, seed=0``).

    Returns:
        A :class:`FeatureUsefulness`.

    Shape:
        clean, adversarial: ``[K, D]``.
    """
    _check_model(model)
    eps = _check_number(eps, "eps", minimum=0.0)
    threshold = _check_number(threshold, "threshold")
    robust_threshold = threshold if robust_threshold is None else _check_number(robust_threshold, "robust_threshold")
    if num_classes is not None:
        _check_int(num_classes, "num_classes", 2)
    elif isinstance(data, TensorData):
        num_classes = data.num_classes
    embed = _feature_fn(model, features)
    attack_fn, kwargs = _resolve_attack(attack, logits, attack_kwargs)
    dev = _device_of(model, device)
    batches = _batches(data, batch_size)
    if adversarial is not None:
        x_all = data.x if isinstance(data, TensorData) else data[0] if isinstance(data, tuple) else None
        if not isinstance(adversarial, torch.Tensor) or x_all is None or adversarial.shape != x_all.shape:
            raise ValueError("adversarial must be a tensor shaped like the inputs of data, which must be a pair "
                             f"(x, y) or a TensorData; got {type(adversarial).__name__} "
                             f"{tuple(getattr(adversarial, 'shape', ()))} for data of type {type(data).__name__}")
        crafted = (a for a, _ in _batches((adversarial, torch.zeros(len(adversarial))), batch_size))
    moments = _ClassMoments(num_classes or 0)
    total = 0
    with eval_mode(model):
        for x, y in progress_bar(batches, enabled=progress, description="feature usefulness"):
            x, y = x.to(dev), y.to(dev).long()
            x_adv = next(crafted).to(dev) if adversarial is not None else None
            if len(y) == 0:
                continue
            clean = _embed(embed, x).float()
            if x_adv is None:
                x_adv = attack_fn(model, x, y, eps=eps, **kwargs) if eps > 0 else x
            adv = _embed(embed, x_adv.detach()).float()
            moments.add(y, clean=clean, sq=clean.square(), adv=adv)
            total += len(y)
    if moments.count is None:
        raise ValueError("data holds no samples")
    clean_u, adv_u = usefulness_from_moments(moments.count, moments.sums["clean"], moments.sums["sq"],
                                             moments.sums["adv"])
    assert adv_u is not None
    clean_u, adv_u = clean_u.float(), adv_u.float()
    useful = (clean_u >= threshold).nonzero().tolist()
    ranking = [
        {"class": c, "feature": d, "clean": float(clean_u[c, d]), "adversarial": float(adv_u[c, d]),
         "robust": bool(adv_u[c, d] >= robust_threshold)}
        for c, d in useful
    ]
    ranking.sort(key=lambda r: -r["clean"])
    clean_total = sum(r["clean"] for r in ranking)
    kept = sum(min(max(r["adversarial"], 0.0), r["clean"]) for r in ranking)
    share = kept / clean_total if ranking and clean_total > 0 else math.nan
    return FeatureUsefulness(
        clean=clean_u, adversarial=adv_u, ranking=ranking, robust_share=float(share), threshold=threshold,
        robust_threshold=robust_threshold, eps=eps, attack=_attack_name(attack),
        class_counts=[int(c) for c in moments.count.tolist()], num_samples=total,
    )


def plot_feature_usefulness(result: FeatureUsefulness, path: str, *, title: str | None = None) -> None:
    """Scatter of clean vs adversarial usefulness of every (class, feature) pair, saved to ``path``
    (needs matplotlib). Pairs right of the threshold are useful; above the robust threshold, robust."""
    if not isinstance(result, FeatureUsefulness):
        raise TypeError(f"result must be a FeatureUsefulness, got {type(result).__name__}")
    figure = _pyplot_figure()(figsize=(4.5, 4.0))
    ax = figure.subplots()
    ax.scatter(result.clean.flatten().tolist(), result.adversarial.flatten().tolist(), s=6, alpha=0.5)
    ax.axvline(result.threshold, color="grey", lw=0.8, ls="--")
    ax.axhline(result.robust_threshold, color="grey", lw=0.8, ls=":")
    ax.plot([-1, 1], [-1, 1], color="black", lw=0.5)
    ax.set_xlabel("usefulness (clean)")
    ax.set_ylabel(f"usefulness under {result.attack} (eps={result.eps:g})")
    ax.set_title(title or f"robust share {result.robust_share:.2f}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


__all__ = ["FeatureUsefulness", "feature_usefulness", "plot_feature_usefulness", "usefulness_from_moments"]
