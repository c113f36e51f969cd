"""Fake (meta) kernels of the compiled ops, for torch.compile, FakeTensor and torch.export.

The attack-state ops mutate ``x_adv`` in place and return nothing, so their fake kernels only check
what can be checked from shapes; the real kernels check the rest (see csrc/common/step_args.h). Their
autograd registration is in C++ (csrc/ops.cpp): they are not differentiable.
"""

from __future__ import annotations

import torch


def _check_batch(op: str, x_adv: torch.Tensor, *others: torch.Tensor) -> None:
    torch._check(x_adv.dim() >= 2, lambda: f"{op}: x_adv must be [B, C, ...], got shape {tuple(x_adv.shape)}")
    for t in others:
        torch._check(
            t.shape == x_adv.shape,
            lambda t=t: f"{op}: shape {tuple(t.shape)} does not match x_adv's {tuple(x_adv.shape)}",
        )


@torch.library.register_fake("nonrobust_ext::linf_step_")
def _linf_step_fake(x_adv, grad, x, eps, alpha, scale, lo, hi, active=None) -> None:
    _check_batch("linf_step_", x_adv, grad, x)


@torch.library.register_fake("nonrobust_ext::l2_step_")
def _l2_step_fake(x_adv, grad, x, eps, alpha, scale, lo, hi, active=None) -> None:
    _check_batch("l2_step_", x_adv, grad, x)


@torch.library.register_fake("nonrobust_ext::random_init_")
def _random_init_fake(x_adv, x, eps, scale, lo, hi, active, seed, norm) -> None:
    _check_batch("random_init_", x_adv, x)
