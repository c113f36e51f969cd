"""Feature-space PGD: move the input inside the eps-ball so that its embedding moves as far as possible.

This is the inner maximisation of the study's discrepancy-mitigating (DM) fine-tuning loss, and a probe
of how fragile a representation is (no labels, no head involved).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._params import Param
from .._validate import check_bool, check_int
from ._common import (
    FiniteWatch,
    check_images,
    check_model,
    eval_mode,
    resolve_amp,
    resolve_generator,
    scaled_input_gradient,
)
from .threat import Bounds, ThreatModel

NONFINITE_EMBEDDING = (
    "embed's output holds NaN or infinite embeddings: the feature distance the attack ascends is then NaN. "
    "Check the embedding function (a float16 forward overflows above 65504) and its input"
)


def feature_pgd(
    embed: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    norm: str = "linf",
    random_start: bool = True,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    amp: torch.dtype | None = None,
    module: torch.nn.Module | None = None,
) -> torch.Tensor:
    r"""PGD ascent on the squared embedding distance to the clean input::

        maximise  || embed(x') - embed(x) ||_2^2   over  x' in ball(x, eps) and the bounds

    with the fused step ops (sign steps for L-inf, normalised steps for L2). From ``x`` itself the
    gradient of the distance is zero, so the attack starts from a random point in the ball by default.

    Args:
        embed: maps a batch ``[B, C, *]`` to embeddings ``[B, D]`` (e.g. ``model.forward_features``).
        x: clean batch inside ``bounds``.
        eps, steps, alpha, norm, bounds, scale, seed, generator, amp: as :func:`nonrobust_ext.pgd`
            (``alpha`` defaults to ``2.5 * eps / steps``).
        random_start: start uniformly in the ball (else at ``x``, where the first gradient is zero).
        module: the ``nn.Module`` behind ``embed`` (when ``embed`` is a bound method), put in eval mode
            for the attack and restored afterwards; by default ``embed`` itself if it is a module, or the
            object a bound method belongs to.

    Returns:
        The adversarial batch, same shape, dtype and memory format as ``x``.

    Shape:
        x: ``[B, C, *]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(embed, "embed")
    check_images(x)
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: 2.5 * e / steps)
    random_start = check_bool(random_start, "random_start")
    precision = resolve_amp(amp, x)
    generator = resolve_generator(seed, generator)
    if module is None:
        module = embed if isinstance(embed, torch.nn.Module) else getattr(embed, "__self__", None)
    elif not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be an nn.Module or None, got {type(module).__name__}")
    x = x.detach()
    watch = FiniteWatch(x.device, NONFINITE_EMBEDDING)

    with eval_mode(module):
        with torch.no_grad(), precision.autocast():
            clean = _check_embedding(embed(x), x).float()
        if clean.numel() and not bool(torch.isfinite(clean).all()):
            raise ValueError(NONFINITE_EMBEDDING)
        x_adv = x.clone()
        if random_start:
            threat.random_init_(x_adv, x, generator=generator)
        for _ in range(steps):
            x_req = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                with precision.autocast():
                    emb = _check_embedding(embed(x_req), x)
                watch.note(emb)
                distance = (emb.float() - clean).square().sum(dim=1)
                grad = scaled_input_gradient(distance, x_req, precision)
            threat.step_(x_adv, grad.to(x_adv.dtype), x)
    watch.check()
    return x_adv


def _check_embedding(emb: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != x.shape[0]:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"embed must return embeddings [B, D] with B={x.shape[0]}, got {shape}")
    return emb


__all__ = ["feature_pgd"]
