"""Turning user-facing hyper-parameters (floats, sequences, tensors) into the tensors the ops take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch

from ._validate import check_int  # noqa: F401  (re-exported: the ops and the data modules import it from here)

Param = Union[float, int, Sequence[float], torch.Tensor]


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_param_tensor(value: Param, like: torch.Tensor, name: str) -> torch.Tensor:
    """A 1-D tensor on ``like``'s device in the kernels' compute dtype."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{name} must be a real number or tensor, got a {value.dtype} tensor")
        return value.to(device=like.device, dtype=opmath_dtype(like.dtype)).reshape(-1)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, not bool")
    if isinstance(value, (int, float)):
        return torch.tensor([float(value)], device=like.device, dtype=opmath_dtype(like.dtype))
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return torch.tensor([float(v) for v in value], device=like.device, dtype=opmath_dtype(like.dtype))
    raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {type(value).__name__}")
