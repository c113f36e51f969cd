"""Fake (meta) kernels of the compiled ops, for torch.compile, FakeTensor and torch.export.

Each fake kernel runs the checks of the real kernels' prologue that shapes, dtypes and devices allow
(:mod:`nonrobust_ext._params` mirrors csrc/common/step_args.h and stats_args.h), with the same exception
types. That matters beyond tracing: a call that mixes a meta tensor with real ones is dispatched to
these kernels, which must refuse it (ValueError) instead of returning uninitialised memory or doing
nothing. Memory overlap and values are left to the real kernels (fake tensors have neither).

The attack-state ops mutate ``x_adv`` in place and return nothing; their autograd registration is in
C++ (csrc/ops.cpp): they are not differentiable.
"""

from __future__ import annotations

import torch

from ._params import (
    check_box_projection_args,
    check_class_stats_args,
    check_feature_pair,
    check_square_proposal_args,
    check_step_args,
)


@torch.library.register_fake("nonrobust_ext::linf_step_")
def _linf_step_fake(x_adv, grad, x, eps, alpha, scale, lo, hi, active=None) -> None:
    check_step_args("linf_step_", x_adv, grad, x, eps, alpha, scale, lo, hi, active)


@torch.library.register_fake("nonrobust_ext::l2_step_")
def _l2_step_fake(x_adv, grad, x, eps, alpha, scale, lo, hi, active=None) -> None:
    check_step_args("l2_step_", x_adv, grad, x, eps, alpha, scale, lo, hi, active)


@torch.library.register_fake("nonrobust_ext::random_init_")
def _random_init_fake(x_adv, x, eps, scale, lo, hi, active, seed, norm) -> None:
    torch._check_value(norm in ("linf", "l2"), lambda: f"random_init_: norm must be 'linf' or 'l2', got {norm!r}")
    check_step_args("random_init_", x_adv, None, x, eps, None, scale, lo, hi, active)


# ------------------------------------------------------------------------------ feature statistics
# Fake kernels check what the shapes, dtypes and devices allow (the real kernels also check label
# values), and the autograd formulas make the three statistics usable inside a loss.


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("nonrobust_ext::class_feature_stats")
def _class_feature_stats_fake(features, labels, num_classes, covariance=False):
    check_class_stats_args(features, labels, num_classes)
    acc = _opmath(features.dtype)
    D = features.shape[1]
    count = features.new_empty((num_classes,), dtype=torch.float64)
    mean = features.new_empty((num_classes, D), dtype=acc)
    m2 = features.new_empty((num_classes, D, D) if covariance else (num_classes, D), dtype=acc)
    return count, mean, m2


def _class_feature_stats_setup(ctx, inputs, output) -> None:
    features, labels, _, covariance = inputs
    count, mean, _ = output
    ctx.covariance = covariance
    ctx.mark_non_differentiable(count)
    ctx.save_for_backward(features, labels, count, mean)


# Rows per chunk of the covariance backward: bounds its [rows, D, D] gather to about 2^24 elements.
_COV_BACKWARD_ELEMENTS = 1 << 24


def _class_feature_stats_backward(ctx, grad_count, grad_mean, grad_m2):
    """d mean_c / d x_i = 1/n_c; d m2_c / d x_i = 2 (x_i - mean_c) (the mean's own dependence on x_i
    drops out: the deviations of a class sum to zero); with covariance, d <G, M2_c> / d x_i =
    (G + G^T)(x_i - mean_c). Only rows of the class they belong to get gradient."""
    features, labels, count, mean = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    acc = mean.dtype
    grad = torch.zeros(features.shape, dtype=acc, device=features.device)
    if grad_mean is not None:
        n = count.clamp(min=1).to(acc).index_select(0, labels)
        grad = grad + grad_mean.to(acc).index_select(0, labels) / n.unsqueeze(1)
    if grad_m2 is not None:
        dev = features.to(acc) - mean.index_select(0, labels)
        g = grad_m2.to(acc)
        if ctx.covariance:
            sym = g + g.transpose(1, 2)
            D = features.shape[1]
            step = max(1, _COV_BACKWARD_ELEMENTS // max(1, D * D))
            parts = [
                torch.bmm(sym.index_select(0, labels[i : i + step]), dev[i : i + step].unsqueeze(2)).squeeze(2)
                for i in range(0, features.shape[0], step)
            ]
            if parts:
                grad = grad + torch.cat(parts)
        else:
            grad = grad + 2 * g.index_select(0, labels) * dev
    return grad.to(features.dtype), None, None, None


torch.library.register_autograd(
    "nonrobust_ext::class_feature_stats", _class_feature_stats_backward, setup_context=_class_feature_stats_setup
)


@torch.library.register_fake("nonrobust_ext::feature_discrepancy")
def _feature_discrepancy_fake(clean, adv):
    check_feature_pair("feature_discrepancy", "clean", clean, "adv", adv, same_width=True)
    acc = _opmath(clean.dtype)
    return clean.new_empty((clean.shape[0],), dtype=acc), clean.new_empty((clean.shape[1],), dtype=acc)


def _feature_discrepancy_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _feature_discrepancy_backward(ctx, grad_sq, grad_mac):
    """With e = adv - clean: d sq_dist_i / d adv_i = 2 e_i; d mean_abs_change_d / d adv_id = sign(e_id) / N
    (0 at e = 0, as torch.abs); the gradients for clean are the negatives."""
    clean, adv = ctx.saved_tensors
    acc = _opmath(clean.dtype)
    diff = adv.to(acc) - clean.to(acc)
    grad = torch.zeros_like(diff)
    if grad_sq is not None:
        grad = grad + 2 * diff * grad_sq.to(acc).unsqueeze(1)
    if grad_mac is not None:
        grad = grad + torch.sign(diff) * (grad_mac.to(acc) / max(diff.shape[0], 1)).unsqueeze(0)
    grad_clean = (-grad).to(clean.dtype) if ctx.needs_input_grad[0] else None
    grad_adv = grad.to(adv.dtype) if ctx.needs_input_grad[1] else None
    return grad_clean, grad_adv


torch.library.register_autograd(
    "nonrobust_ext::feature_discrepancy", _feature_discrepancy_backward, setup_context=_feature_discrepancy_setup
)


@torch.library.register_fake("nonrobust_ext::linear_hsic")
def _linear_hsic_fake(x, y):
    check_feature_pair("linear_hsic", "x", x, "y", y, same_width=False)
    return x.new_empty((), dtype=torch.float64)


def _linear_hsic_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _linear_hsic_backward(ctx, grad):
    """h = ||C||_F^2 with C = Xc^T Yc: dh/dX = 2 Yc C^T and dh/dY = 2 Xc C (centring is a projection,
    and Yc, Xc are already centred, so it drops out). Centred copies are fine here: the gradients are
    [N, D] anyway."""
    x, y = ctx.saved_tensors
    acc = _opmath(x.dtype)
    xc = x.to(acc) - x.to(acc).mean(0, keepdim=True)
    yc = y.to(acc) - y.to(acc).mean(0, keepdim=True)
    cross = xc.transpose(0, 1) @ yc
    g = 2 * grad.to(acc)
    grad_x = (g * (yc @ cross.transpose(0, 1))).to(x.dtype) if ctx.needs_input_grad[0] else None
    grad_y = (g * (xc @ cross)).to(y.dtype) if ctx.needs_input_grad[1] else None
    return grad_x, grad_y


torch.library.register_autograd("nonrobust_ext::linear_hsic", _linear_hsic_backward, setup_context=_linear_hsic_setup)


@torch.library.register_fake("nonrobust_ext::square_linf_proposal")
def _square_linf_proposal_fake(current, low, high, rows, top, left, side, up):
    check_square_proposal_args(current, low, high, rows, top, left, side, up, values=False)
    n = rows.shape[0]
    return current.new_empty((n, *current.shape[1:])), current.new_empty((n,), dtype=torch.bool)


@torch.library.register_fake("nonrobust_ext::box_hyperplane_projection")
def _box_hyperplane_projection_fake(w, c, up, down, norm):
    check_box_projection_args(w, c, up, down, norm)
    return torch.empty_like(w, memory_format=torch.contiguous_format)
