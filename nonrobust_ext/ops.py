"""Typed wrappers of the compiled ops (``torch.ops.nonrobust_ext.*``): the kernel API.

Each wrapper accepts Python numbers as well as tensors for the per-sample (``eps``, ``alpha``: one
value or ``[B]``) and per-channel (``scale``, ``lo``, ``hi``: one value or ``[C]``) parameters, and
calls the op. Inputs are batches ``[B, C, ...]``; any dense layout (contiguous, channels_last) runs
in place without copies. The pure-PyTorch twin of each op, with the same semantics, is in
:mod:`nonrobust_ext.reference`.
"""

from __future__ import annotations

import torch

from ._params import Param, as_param_tensor

_ops = torch.ops.nonrobust_ext


def linf_step_(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    alpha: Param,
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
) -> None:
    """Fused L-inf PGD step, in place.

    ``x_adv <- clip_[lo,hi]( clip_[x - eps*scale, x + eps*scale]( x_adv + alpha*scale*sign(grad) ) )``

    Args:
        x_adv: the adversarial batch, updated in place.
        grad: gradient of the loss to maximise with respect to ``x_adv``.
        x: the clean batch (centre of the eps-ball).
        eps, alpha: radius and step size, one value or one per sample.
        lo, hi: input bounds, one value or one per channel.
        scale: per-channel size of one threat-model unit in input units (``1/std`` when the inputs
            are normalised outside the model); one value or one per channel.
        active: optional bool mask ``[B]``; inactive samples are left untouched.

    Shape:
        x_adv, grad, x: ``[B, C, *]``, same dtype and device.
    """
    _ops.linf_step_(
        x_adv,
        grad,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(alpha, x_adv, "alpha"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
    )


def l2_step_(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    alpha: Param,
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
) -> None:
    """Fused L2 PGD step, in place, with the per-sample norms computed inside the kernel.

    In threat-model units (``u = input / scale``, per channel)::

        d   = (x_adv - x)/scale + alpha * g' / (||g'|| + 1e-12),   g' = grad * scale
        d  <- d * min(1, eps / ||d||)                               (projection onto the L2 ball)
        x_adv <- clip_[lo,hi](x + d * scale)

    Args: as :func:`linf_step_`.
    """
    _ops.l2_step_(
        x_adv,
        grad,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(alpha, x_adv, "alpha"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
    )


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A seed for :func:`random_init_` drawn from ``generator`` (or torch's default generator)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**62, (), generator=generator, device=device))


def random_init_(
    x_adv: torch.Tensor,
    x: torch.Tensor,
    *,
    eps: Param,
    norm: str = "linf",
    lo: Param = 0.0,
    hi: Param = 1.0,
    scale: Param = 1.0,
    active: torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Random start, in place: ``x_adv <- clip_[lo,hi](x + delta*scale)``.

    ``delta`` is uniform in the L-inf ball (``norm="linf"``) or uniform in the L2 ball
    (``norm="l2"``: Gaussian direction, radius ``eps * U^(1/n)`` with ``n`` elements per sample) of
    radius ``eps``. The noise is a pure function of ``seed`` and each element's logical index, so it is
    reproducible, independent of memory layout, and the same on CPU and CUDA.

    Args:
        seed: the noise seed; if None one is drawn from ``generator`` (or torch's default generator,
            so ``torch.manual_seed`` makes it reproducible).
        Others: as :func:`linf_step_`.
    """
    if seed is None:
        seed = draw_seed(generator)
    elif generator is not None:
        raise ValueError("pass either seed or generator to random_init_, not both")
    _ops.random_init_(
        x_adv,
        x,
        as_param_tensor(eps, x_adv, "eps"),
        as_param_tensor(scale, x_adv, "scale"),
        as_param_tensor(lo, x_adv, "lo"),
        as_param_tensor(hi, x_adv, "hi"),
        active,
        int(seed),
        norm,
    )


__all__ = ["draw_seed", "l2_step_", "linf_step_", "random_init_"]
