r"""Robust and non-robust datasets (Ilyas et al., 2019, "Adversarial examples are not bugs, they are
features", Section 3).

- **D_R** (:func:`robust_dataset`): every training image ``x`` is replaced by an image ``x_r`` whose
  *robust* representation matches that of ``x``: starting from a different, randomly drawn training
  image ``x_0``, gradient descent on the input minimises ``|| g(x_r) - g(x) ||_2`` where ``g`` is the
  penultimate embedding of an adversarially robust model. The label of ``x`` is kept. Only the features
  the robust model uses survive, so a standard model trained on D_R is (somewhat) robust.
- **D_NR** (:func:`non_robust_dataset`): every training image ``x`` is perturbed by a small targeted
  attack towards a class ``t`` on a *standard* model and relabelled ``t``. To a human (and to robust
  features) the image still shows class ``y``; only non-robust features point to ``t``. Targets are
  drawn uniformly at random (``"random"``, the paper's D_rand: the robust features are then
  uncorrelated with the new labels) or ``t = (y + 1) mod K`` (``"deterministic"``, D_det: the robust
  features are *anti*-correlated with them). A model trained on D_NR that classifies the real test
  set above chance learnt from non-robust features alone.
- :func:`train_and_test` trains a fresh model on such a set and reports its accuracy on the real test set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_choice, check_int, check_optional_int, check_optional_real, check_real
from ..attacks import pgd, robust_accuracy
from ..attacks._common import LogitsSelector, eval_mode
from ..data import TensorData
from ..training import Objective, Standard, TrainConfig, train
from ._inputs import (
    Data,
    FeatureFn,
    check_batch_size,
    check_bounds,
    check_device,
    check_images,
    check_labels,
    check_labels_below,
    check_model,
    embed,
    feature_fn,
    labelled_pair,
    logits_of,
    materialise,
    resolve_device,
)


def representation_distance(
    model: torch.nn.Module,
    x: torch.Tensor,
    reference: torch.Tensor,
    *,
    features: FeatureFn | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample ``|| g(x_i) - g(reference_i) ||_2`` in the embedding ``g`` (default
    ``model.forward_features``): how well :func:`robust_dataset` images match their originals.

    Shape:
        x, reference: ``[N, C, H, W]``; returns ``[N]`` (on the CPU, float32).
    """
    check_model(model)
    embed_fn = feature_fn(model, features)
    check_images(x, "x")
    check_images(reference, "reference")
    if x.shape != reference.shape:
        raise ValueError(f"reference must have the shape of x {tuple(x.shape)}, got {tuple(reference.shape)}")
    if len(x) == 0:
        raise ValueError("x holds no images: nothing to compute over")
    batch_size = check_batch_size(batch_size)
    dev = resolve_device(model, device)
    out = []
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            a = embed(embed_fn, x[i : i + batch_size].to(dev)).float()
            b = embed(embed_fn, reference[i : i + batch_size].to(dev)).float()
            out.append((a - b).norm(dim=1).cpu())
    return torch.cat(out)


def robust_dataset(
    model: torch.nn.Module,
    data: Data,
    *,
    steps: int = 1000,
    lr: float = 0.1,
    seed: int = 0,
    features: FeatureFn | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TensorData:
    r"""D_R: images whose representation under a (robust) model matches the originals', labels kept.

    For each image ``x`` (label ``y``) a start ``x_0`` is drawn among the *other* images of ``data``
    (seeded), then ``steps`` normalised gradient steps descend the squared representation distance::

        x_r <- clip_bounds( x_r - lr * grad / ||grad||_2 ),   grad = d/dx_r || g(x_r) - g(x) ||_2^2

    (Ilyas et al.: L2-normalised steps of 0.1, 1000 of them, on CIFAR-10). A fixed-size normalised
    step ends up circling the optimum, so per image the iterate with the smallest distance seen is the
    one kept.

    Args:
        model: the (robust) model whose representation is matched; eval mode, modes restored.
        data: the training set (``TensorData``, ``(x, y)`` or batches; held in memory as a whole).
        steps: gradient steps (>= 1).
        lr: the L2 length of each step (> 0).
        seed: draws the start images.
        features: ``callable(x) -> [B, D]``; default ``model.forward_features``.
        bounds: ``(lo, hi)`` the images are clipped to after each step, or ``None``.
        batch_size: images optimised together.
        device: where to compute (default: the model's device).
        progress: show a progress bar (tqdm).

    Returns:
        A :class:`TensorData` of the same size, labels and classes as ``data``, on ``data``'s device.
    """
    check_model(model)
    steps = check_int(steps, "steps", 1)
    lr = check_real(lr, "lr", low=0.0, low_inclusive=False)
    seed = check_int(seed, "seed")
    lo, hi = check_bounds(bounds)
    batch_size = check_batch_size(batch_size)
    check_bool(progress, "progress")
    embed_fn = feature_fn(model, features)
    dev = resolve_device(model, device)
    d = materialise(data)
    n = len(d)
    if n < 2:
        raise ValueError(f"data must hold at least 2 images (each start is another image), got {n}")
    g = torch.Generator().manual_seed(seed)
    start = (torch.arange(n) + torch.randint(1, n, (n,), generator=g)) % n
    out = torch.empty_like(d.x)
    chunks = range(0, n, batch_size)
    with eval_mode(model):
        for i in progress_bar(chunks, enabled=progress, description="robust dataset", total=len(chunks)):
            idx = torch.arange(i, min(i + batch_size, n))
            x = d.x[idx.to(d.x.device)].to(dev)
            target = embed(embed_fn, x).detach()
            x_r = d.x[start[idx].to(d.x.device)].to(dev).clone()
            best = x_r.clone()
            best_dist = torch.full((len(idx),), math.inf, device=dev)
            for _ in range(steps):
                x_req = x_r.detach().requires_grad_(True)
                dist = (embed(embed_fn, x_req, grad=True).float() - target.float()).square().sum(dim=1)
                (grad,) = torch.autograd.grad(dist.sum(), x_req)
                better = dist.detach() < best_dist
                best_dist = torch.where(better, dist.detach(), best_dist)
                best[better] = x_r[better]
                norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
                x_r = (x_r - lr * grad / norm).clamp(lo, hi).detach()
            final = embed(embed_fn, x_r).float()
            final_dist = (final - target.float()).square().sum(dim=1)
            better = final_dist < best_dist
            best[better] = x_r[better]
            out[idx.to(out.device)] = best.to(out.device, out.dtype)
    return TensorData(out, d.y.clone(), list(d.classes))


def non_robust_dataset(
    model: torch.nn.Module,
    data: Data,
    *,
    eps: float,
    steps: int = 100,
    alpha: float | None = None,
    norm: str = "l2",
    targets: str | torch.Tensor = "random",
    seed: int = 0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    **attack_kwargs: Any,
) -> TensorData:
    r"""D_NR: every image nudged by a targeted attack towards a class ``t`` and relabelled ``t``.

    ``x_t = pgd(model, x, t, targeted=True, eps=eps, norm=norm, steps=steps, random_start=False)``
    (Ilyas et al.: L2, eps 0.5, 100 steps of 0.1 on CIFAR-10; the default ``alpha`` here is
    ``2.5 * eps / steps``), with

    - ``targets="random"``: ``t`` uniform over the K classes, drawn with ``seed`` (D_rand);
    - ``targets="deterministic"``: ``t = (y + 1) mod K`` (D_det);
    - a tensor ``[N]`` of target classes: those.

    Every sample is kept whether or not the attack reached its target (as in the paper).

    Args:
        model: a standard (non-robust) classifier; eval mode, modes restored.
        data: the training set (held in memory as a whole).
        eps: the perturbation radius (> 0), in ``norm``.
        steps, alpha, norm: the targeted PGD's steps, step size and norm (``"l2"`` or ``"linf"``).
        targets: ``"random"``, ``"deterministic"`` or a tensor of targets.
        seed: draws the random targets (and seeds the attack).
        bounds: the input bounds for the attack (``None`` for unbounded inputs).
        batch_size: batch size of the attack.
        device: where to attack (default: the model's device).
        logits: where the logits are in the model's output.
        progress: show a progress bar (tqdm).
        attack_kwargs: further :func:`nonrobust_ext.pgd` arguments (e.g. ``random_start=True``).

    Returns:
        A :class:`TensorData` of the perturbed images labelled with their targets, same classes as the
        model's outputs (``data``'s class names when they match in number), on ``data``'s device.
    """
    check_model(model)
    eps = check_real(eps, "eps", low=0.0, low_inclusive=False)
    steps = check_int(steps, "steps", 1)
    alpha = check_optional_real(alpha, "alpha", low=0.0, low_inclusive=False)
    check_choice(norm, "norm", ("l2", "linf"))
    seed = check_int(seed, "seed")
    batch_size = check_batch_size(batch_size)
    check_bounds(bounds)
    check_bool(progress, "progress")
    for reserved in ("targeted", "eps", "steps", "norm", "bounds", "seed", "return_result"):
        if reserved in attack_kwargs:
            raise TypeError(f"non_robust_dataset sets {reserved!r} itself; it cannot be passed as an attack argument")
    if not isinstance(targets, (str, torch.Tensor)):
        raise TypeError(f"targets must be 'random', 'deterministic' or a tensor of classes, got "
                        f"{type(targets).__name__}")
    if isinstance(targets, str):
        check_choice(targets, "targets", ("random", "deterministic"))
    dev = resolve_device(model, device)
    d = materialise(data)  # at least one sample, finite images, labels >= 0
    n = len(d)
    with eval_mode(model):
        k = int(logits_of(model, d.x[:1].to(dev), logits).shape[1])
    if isinstance(targets, torch.Tensor):
        t_all = check_labels(targets, "targets", n).cpu()
        check_labels_below(t_all, k, "targets", "the model")
    elif targets == "random":
        t_all = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    else:  # deterministic
        check_labels_below(d.y, k, "data labels", "the model")
        t_all = (d.y.cpu() + 1) % k
    out = torch.empty_like(d.x)
    chunks = range(0, n, batch_size)
    kwargs = {"random_start": False, **attack_kwargs}
    with eval_mode(model):
        bar = progress_bar(chunks, enabled=progress, description="non-robust dataset", total=len(chunks))
        for b, i in enumerate(bar):
            idx = torch.arange(i, min(i + batch_size, n))
            x = d.x[idx.to(d.x.device)].to(dev)
            t = t_all[idx].to(dev)
            x_adv = pgd(model, x, t, eps=eps, steps=steps, alpha=alpha, norm=norm, targeted=True, bounds=bounds,
                        logits=logits, seed=seed + b, **kwargs)
            out[idx.to(out.device)] = x_adv.detach().to(out.device, out.dtype)
    classes = list(d.classes) if len(d.classes) == k else [f"class{c}" for c in range(k)]
    return TensorData(out, t_all.to(d.y.device), classes)


def train_and_test(
    dataset: TensorData | tuple[torch.Tensor, torch.Tensor],
    test_data: TensorData | tuple[torch.Tensor, torch.Tensor],
    model_fn: Callable[[], torch.nn.Module],
    *,
    config: TrainConfig,
    objective: Objective | None = None,
    attack: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a fresh model (``model_fn()``) on a constructed set and test it on the real test set.

    Training is :func:`nonrobust_ext.training.train` with ``objective`` (default ``Standard()``) and
    ``config``, nothing kept on disk; testing is :func:`nonrobust_ext.robust_accuracy`.

    Args:
        dataset: the training set (e.g. from :func:`robust_dataset` or :func:`non_robust_dataset`).
        test_data: the real, untouched test set.
        model_fn: returns a freshly initialised model.
        config: the training settings (:class:`~nonrobust_ext.training.TrainConfig`).
        objective: the training objective (default standard cross-entropy).
        attack: optional robust evaluation: :func:`~nonrobust_ext.robust_accuracy` keyword arguments
            with one ``eps``, e.g. ``{"attack": "pgd", "eps": 0.1, "steps": 10}``.
        batch_size: evaluation batch size.
        device: where to train and test (default: where ``model_fn`` puts the model).
        seed: seeds the model's initialisation (``model_fn()`` runs on a fork of torch's CPU generator,
            which is left as it was); ``None`` uses the global generator as it stands. The data order
            and the attacks of training are seeded by ``config.seed``.
        progress: show progress bars.

    Returns:
        ``{"clean_accuracy", "robust_accuracy" (with ``attack``), "eps" (with ``attack``),
        "train_size", "test_size", "steps", "train_accuracy", "train_loss"}``: plain floats and ints.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a callable returning a fresh model, got {type(model_fn).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if objective is not None and not isinstance(objective, Objective):
        raise TypeError(f"objective must be a nonrobust_ext.training objective, got {type(objective).__name__}")
    if attack is not None and not isinstance(attack, dict):
        raise TypeError(f"attack must be None or a dict of robust_accuracy arguments, got {type(attack).__name__}")
    labelled_pair(dataset, "dataset")
    test_pair = labelled_pair(test_data, "test_data")
    batch_size = check_batch_size(batch_size)
    seed = check_optional_int(seed, "seed")
    check_bool(progress, "progress")
    kwargs = dict(attack or {})  # the evaluation's radius checked before any training
    eps = check_real(kwargs.pop("eps", 0.0), "attack['eps']", low=0.0)
    if device is not None:
        check_device(device)
    if seed is None:
        model = model_fn()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_fn()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
    result = train(model, objective or Standard(), dataset, config=config, device=device, progress=progress,
                   description="train on constructed set")
    report = robust_accuracy(model, test_pair, eps=[eps], batch_size=batch_size, device=device, progress=progress,
                             **kwargs)
    out: dict[str, Any] = {
        "clean_accuracy": report.clean_accuracy,
        "train_size": len(dataset[0]) if isinstance(dataset, (tuple, list)) else len(dataset),
        "test_size": report.num_samples,
        "steps": result.steps,
        "train_accuracy": result.final.get("train_accuracy"),
        "train_loss": result.final.get("train_loss"),
    }
    if attack is not None:
        out["robust_accuracy"] = report.robust_accuracy[0]
        out["eps"] = eps
    return out


__all__ = ["non_robust_dataset", "representation_distance", "robust_dataset", "train_and_test"]
