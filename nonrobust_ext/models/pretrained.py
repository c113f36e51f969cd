"""Finding ImageNet weights on this machine: nothing is downloaded, ever.

``find_torchvision_weights("resnet50")`` looks where torchvision itself caches its weights
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) for a file named the
way torchvision names them, ``<arch>-<hash>.pth``, and returns its path for :func:`load_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .registry import TORCHVISION_PREFIX, canonical_name


def torchvision_cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_torchvision_weights(arch: str) -> Path:
    """The torchvision ImageNet checkpoint of ``arch`` in the local cache.

    Args:
        arch: a built-in ImageNet-style name (``"resnet18"``, ``"resnet50"``, ``"wide_resnet50_2"``
            or its alias ``"wrn50"``) or ``"torchvision:<name>"``.

    Returns:
        The path of the one ``<arch>-*.pth`` file in :func:`torchvision_cache_dir`.

    Raises:
        FileNotFoundError: no such file; the message says where to put it (copy it from a machine
            where ``torchvision.models.<arch>(weights="IMAGENET1K_V1")`` has run) or to pass a path.
        ValueError: several candidates (e.g. V1 and V2 weights); the message lists them.
    """
    name = canonical_name(arch)
    if name.startswith(TORCHVISION_PREFIX):
        name = name[len(TORCHVISION_PREFIX):]
    folder = torchvision_cache_dir()
    found = sorted(folder.glob(f"{name}-*.pth")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no torchvision ImageNet weights for {name!r} in {folder} (nothing is downloaded at run time). "
            f"Copy {name}-<hash>.pth there from a machine where torchvision.models.{name}(weights='IMAGENET1K_V1') "
            "has run (or set TORCH_HOME to the folder holding hub/checkpoints), or pass the weights file's path "
            "instead of 'torchvision'."
        )
    if len(found) > 1:
        raise ValueError(
            f"several torchvision weights for {name!r} in {folder}: {', '.join(p.name for p in found)}; "
            "pass the one you mean as a path"
        )
    return found[0]
