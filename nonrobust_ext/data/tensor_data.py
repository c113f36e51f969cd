"""The in-memory labelled image set every loader returns and every consumer takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .._validate import check_finite


@dataclass(eq=False, repr=False)
class TensorData:
    """A labelled image set held in memory as two tensors.

    The datasets of the study are small (Fashion-MNIST is 60000 x 784 bytes), so they live in memory
    as tensors and are indexed directly: no worker processes, no per-sample decoding, and moving a
    whole set to the GPU once is one call (:meth:`to`).

    Args:
        x: images, floating point (float32 from every loader) with values in [0, 1].
        y: labels, int64, each in ``0 .. len(classes) - 1``.
        classes: class names; ``classes[k]`` names label ``k``.

    Shape:
        - x: ``[N, C, H, W]``
        - y: ``[N]``

    The constructor checks dtypes, shapes, devices, the label range (one pass over ``y``) and that
    every pixel is finite (one pass over ``x``: a NaN pixel makes every loss, gradient and accuracy
    computed from it meaningless, and it slips past range checks). Sets derived from a checked one
    (:meth:`subset`, :meth:`to`) are not scanned again. The value range ``[0, 1]`` is the caller's
    promise, not checked.

    Raises:
        TypeError: ``x`` / ``y`` not tensors, ``x`` not floating point, ``y`` not int64, ``classes``
            not a list of names.
        ValueError: wrong shapes, ``x`` and ``y`` on different devices, a label outside
            ``0 .. len(classes) - 1``, a NaN or infinite pixel.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor):
            raise TypeError(f"TensorData.x must be a tensor, got {type(self.x).__name__}")
        if not self.x.is_floating_point():
            raise TypeError(
                f"TensorData.x must be a floating-point tensor with values in [0, 1], got {self.x.dtype}; "
                "convert uint8 images with x.float() / 255"
            )
        if self.x.dim() != 4:
            raise ValueError(f"TensorData.x must have shape [N, C, H, W], got {tuple(self.x.shape)}")
        if not isinstance(self.y, torch.Tensor):
            raise TypeError(f"TensorData.y must be a tensor, got {type(self.y).__name__}")
        if self.y.dtype != torch.int64:
            raise TypeError(f"TensorData.y must be an int64 tensor of labels, got {self.y.dtype}")
        if self.y.dim() != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"TensorData.y must have shape [N] = [{self.x.shape[0]}] to match x, got {tuple(self.y.shape)}"
            )
        if self.y.device != self.x.device:
            raise ValueError(f"TensorData.y is on {self.y.device} but x is on {self.x.device}")
        if not getattr(self, "_derived", False):
            check_finite(self.x, "TensorData.x")
        if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, Sequence):
            raise TypeError(f"TensorData.classes must be a list of class names, got {type(self.classes).__name__}")
        self.classes = [str(c) for c in self.classes]
        if self.y.numel() > 0:
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= len(self.classes):
                raise ValueError(
                    f"TensorData.y must hold labels in 0..{len(self.classes) - 1} (one per class name), "
                    f"got labels in {lo}..{hi}"
                )

    @property
    def num_classes(self) -> int:
        """The number of classes (``len(classes)``), whether or not every class has samples."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"TensorData(n={len(self)}, shape={tuple(self.x.shape[1:])}, dtype={self.x.dtype}, "
            f"device={self.x.device}, num_classes={self.num_classes})"
        )

    def subset(self, index: torch.Tensor) -> TensorData:
        """The samples at ``index`` (int64 indices or a boolean mask of length N), same classes.

        Args:
            index: int64 tensor of sample indices, or a bool tensor of shape ``[N]``.

        Returns:
            A new :class:`TensorData` (advanced indexing copies; the original is untouched).
        """
        if not isinstance(index, torch.Tensor):
            index = torch.as_tensor(index)
            if index.numel() == 0:  # an empty list becomes a float tensor
                index = index.long()
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"index as a mask must have shape [{len(self)}], got {tuple(index.shape)}")
        elif index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"index must be an integer or bool tensor, got {index.dtype}")
        elif index.dim() != 1:
            raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        index = index.to(self.x.device)
        if index.dtype != torch.bool:
            index = index.long()
        return self._derive(self.x[index], self.y[index])

    def to(self, device: torch.device | str) -> TensorData:
        """The same set on ``device`` (no copy when it is already there)."""
        return self._derive(self.x.to(device), self.y.to(device))

    def _derive(self, x: torch.Tensor, y: torch.Tensor) -> TensorData:
        """A set made of this one's samples: checked as any other, except the pass over its pixels
        (they were checked when this set was made)."""
        derived = object.__new__(TensorData)
        derived._derived = True
        derived.__init__(x, y, list(self.classes))  # type: ignore[misc]
        del derived._derived
        return derived
