"""WiSE-FT (Wortsman et al., CVPR 2022): the weights of a fine-tuned model interpolated towards the
pretrained ones it started from, ``theta(alpha) = (1 - alpha) * theta_pretrained + alpha *
theta_finetuned``. One fine-tuning run then gives a whole family of models, from the pretrained
features (alpha 0) to the fine-tuned ones (alpha 1), with no retraining: a robustness-accuracy curve
over ``alpha``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch

from .._validate import check_real


def interpolate_weights(pretrained: torch.nn.Module | Mapping[str, torch.Tensor], finetuned: torch.nn.Module,
                        alpha: float, *, keep: Sequence[str] = ()) -> torch.nn.Module:
    """A copy of ``finetuned`` with ``(1 - alpha) * pretrained + alpha * finetuned`` as its weights.

    Every floating-point parameter and buffer (BatchNorm's running statistics too) is interpolated where
    ``pretrained`` has the same name and shape; the others keep the fine-tuned value: a new head (the
    source model's head is for other classes), counters such as ``num_batches_tracked``, and the
    modules named in ``keep``. ``finetuned`` itself is left as it is.

    Args:
        pretrained: the weights fine-tuning started from: a model or a state dict.
        finetuned: the fine-tuned model.
        alpha: in [0, 1]; 0 gives the pretrained weights (with the fine-tuned head), 1 the fine-tuned model.
        keep: names of modules whose weights stay the fine-tuned ones, e.g. ``("fc",)`` for a new head
            that happens to have the old one's shape (as many target classes as source classes): the
            source head's rows are other classes, mixing them in would be noise.

    Returns:
        The interpolated model, in ``finetuned``'s mode, on its device.

    Raises:
        TypeError: a model that is not an ``nn.Module``, or weights that are not a state dict.
        ValueError: ``alpha`` outside [0, 1], NaN; no weight shared with ``pretrained`` (the wrong
            model: nothing would be interpolated).
    """
    alpha = check_real(alpha, "alpha", low=0.0, high=1.0)
    if not isinstance(finetuned, torch.nn.Module):
        raise TypeError(f"finetuned must be a torch.nn.Module, got {type(finetuned).__name__}")
    if isinstance(pretrained, torch.nn.Module):
        start = pretrained.state_dict()
    elif isinstance(pretrained, Mapping):
        start = pretrained
    else:
        raise TypeError(f"pretrained must be a torch.nn.Module or a state dict, got {type(pretrained).__name__}")
    if isinstance(keep, str) or not isinstance(keep, Sequence) or not all(isinstance(k, str) for k in keep):
        raise TypeError(f"keep must be a sequence of module names (str), got {keep!r}")
    kept = tuple(keep)
    mixed = copy.deepcopy(finetuned)
    shared = 0
    with torch.no_grad():
        for name, value in mixed.state_dict().items():
            origin = start.get(name)
            if (not isinstance(origin, torch.Tensor) or origin.shape != value.shape or not value.is_floating_point()
                    or any(name == k or name.startswith(k + ".") for k in kept)):
                continue
            value.lerp_(origin.to(value.device, value.dtype), 1.0 - alpha)  # value + (1 - alpha) * (origin - value)
            shared += 1
    if shared == 0:
        raise ValueError("pretrained shares no weight (same name and shape) with finetuned: it is not the model "
                         "fine-tuning started from")
    return mixed


__all__ = ["interpolate_weights"]
