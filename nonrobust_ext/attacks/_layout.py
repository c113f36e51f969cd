"""The model an evaluation runs its attacks on: the user's model, or a channels-last copy of it.

On the CPU, oneDNN's convolutions and PyTorch's pooling run several times faster on channels-last
(NHWC) activations than on the default NCHW ones (a 2-conv Fashion-MNIST CNN: forward 3.3x, forward +
input gradient 1.5x; benchmarks/results/autoattack_cpu.md). A model's activations follow its
convolution weights' layout, so a copy with channels-last weights computes the same function faster.
The copy is an optimisation only: it is checked against the model on the clean batch before it is
used, it is dropped (the model itself is used) where it cannot be made or disagrees, and whatever an
attack finds on it is verified on the model itself by the caller.
"""

from __future__ import annotations

import copy
import warnings

import torch

from .._validate import check_bool
from ._common import LogitsSelector, Model, select_logits

# The copy must give the model's logits up to float rounding (a different summation order in the
# convolutions): a larger gap means a forward that depends on the layout (a ``view`` of a flattened
# activation, a hand-written kernel) and the copy is not the model.
_RTOL = 1e-4


def attack_model(model: Model, x: torch.Tensor, clean: torch.Tensor, logits: LogitsSelector,
                 channels_last: bool | None) -> tuple[Model, bool]:
    """``(model to attack, whether it is a channels-last copy)``.

    ``channels_last``: ``False`` the model itself; ``True`` a channels-last copy wherever one can be
    made and agrees with the model (a warning says why not otherwise); ``None`` (auto) the same as
    ``True`` on the CPU for image batches and models with a 2-D convolution whose weight is not
    channels-last yet, the model itself otherwise. ``clean``: the model's logits at ``x``, the check.
    """
    if channels_last is not None:
        channels_last = check_bool(channels_last, "channels_last")
    if channels_last is False:
        return model, False
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)] if isinstance(model, torch.nn.Module) else []
    asked = channels_last is True
    if not asked and not (x.device.type == "cpu" and x.dim() == 4 and any(
            not m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)):
        return model, False
    why = _not_usable(model, x, convs)
    if why is None:
        try:
            twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
        except Exception as error:  # a module that cannot be copied (open handles, a wrapped process group)
            why = f"the model cannot be copied ({type(error).__name__}: {error})"
        else:
            why = _disagrees(twin, model, x, clean, logits)
            if why is None:
                return twin, True
    if asked:
        warnings.warn(f"channels_last=True: attacking the model as it is: {why}", stacklevel=3)
    return model, False


def _not_usable(model: Model, x: torch.Tensor, convs: list[torch.nn.Conv2d]) -> str | None:
    if not isinstance(model, torch.nn.Module):
        return "it is not an nn.Module (its weights cannot be converted)"
    if x.dim() != 4:
        return f"the inputs are not image batches [B, C, H, W] (shape {tuple(x.shape)})"
    if not convs:
        return "it has no 2-D convolution"
    return None


def _disagrees(twin: torch.nn.Module, model: Model, x: torch.Tensor, clean: torch.Tensor,
               logits: LogitsSelector) -> str | None:
    """Why the copy is not the model on ``x``, or None."""
    try:
        with torch.no_grad():
            z = select_logits(twin(x), logits)
    except Exception as error:  # e.g. a .view() of an activation that is no longer contiguous
        return f"the channels-last copy fails ({type(error).__name__}: {error})"
    scale = float(clean.abs().max()) if clean.numel() else 0.0
    if z.shape != clean.shape or not torch.allclose(z.to(clean.dtype), clean, rtol=_RTOL, atol=_RTOL * scale):
        return "the channels-last copy's logits differ from the model's"
    return None


__all__ = ["attack_model"]
