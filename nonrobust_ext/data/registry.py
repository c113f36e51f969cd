"""``load(name)``: every dataset by name, as the CLI and the study pipeline ask for them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .._validate import check_bool, check_int
from .cifar_batches import cifar
from .fmnist import fashion_mnist
from .folder import image_folder
from .synth import synthetic
from .tensor_data import TensorData

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "folder", "synthetic")

#: Default sizes of ``load("synthetic")``: a tenth of Fashion-MNIST's.
SYNTHETIC_TRAIN_N = 6000
SYNTHETIC_TEST_N = 1000

_ALIASES = {"fashion_mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist",
            "cifar10": "cifar10", "cifar100": "cifar100", "folder": "folder", "image_folder": "folder",
            "synthetic": "synthetic"}


def _folder_split(root: Path, train: bool) -> Path:
    if not (root / "train").is_dir():
        if train:
            return root
        raise ValueError(
            f"load('folder', train=False): {root} has no train/ and test/ (or val/) subfolders; "
            "pass the test folder itself as root with train=True, or use data.image_folder"
        )
    if train:
        return root / "train"
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise ValueError(f"load('folder', train=False): {root} has train/ but no test/ or val/ subfolder")


def load(name: str, *, root: str | os.PathLike[str] | None = None, train: bool = True, **kwargs: Any) -> TensorData:
    """A dataset by name.

    Args:
        name: ``"fashion_mnist"`` (also ``"fashion-mnist"``, ``"fmnist"``), ``"cifar10"``,
            ``"cifar100"``, ``"folder"`` or ``"synthetic"``.
        root: the data folder (see each loader); None searches the default locations
            (``fashion_mnist``, ``cifar*``); required for ``"folder"``, ignored by ``"synthetic"``.
        train: the training split or the test split. ``"folder"``: when ``root`` has a ``train/``
            subfolder, ``train/`` or ``test/`` (else ``val/``) is read; otherwise ``root`` itself
            is the training set and ``train=False`` is an error. ``"synthetic"``: the train set is
            ``synthetic(n, seed=2 * seed)`` and the test set ``synthetic(n, seed=2 * seed + 1)`` (disjoint
            draws of one task), with ``n`` defaulting to 6000 / 1000.
        **kwargs: passed to the loader (``size``/``channels`` for folder; ``n``, ``num_classes``,
            ``shape``, ``seed``, ``noise``, ``pattern_seed`` for synthetic).

    Returns:
        The :class:`TensorData`.

    Raises:
        TypeError: ``name`` not a str, ``root`` not a path, ``train`` not a bool, extra keyword
            arguments for a loader that takes none, or a loader's argument of the wrong type.
        ValueError: unknown name, or a value the loader refuses (the message names the argument).
        FileNotFoundError: the data files are not where ``root`` (or the default locations) say.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    check_bool(train, "train")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str, os.PathLike or None, got {type(root).__name__}")
    key = _ALIASES.get(name.lower().replace("-", "_"))
    if key is None:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}, got {name!r}")
    if key in ("fashion_mnist", "cifar10", "cifar100") and kwargs:
        raise TypeError(f"load({key!r}) takes no extra keyword arguments, got {sorted(kwargs)}")
    if key == "fashion_mnist":
        return fashion_mnist(root, train=train)
    if key in ("cifar10", "cifar100"):
        return cifar(root, name=key, train=train)
    if key == "folder":
        if root is None:
            raise ValueError("load('folder') needs root= the folder of class subfolders")
        return image_folder(_folder_split(Path(root).expanduser(), train), **kwargs)
    n = kwargs.pop("n", SYNTHETIC_TRAIN_N if train else SYNTHETIC_TEST_N)
    # The train and test draws use seeds 2 * seed and 2 * seed + 1, which must stay in torch's range.
    seed = check_int(kwargs.pop("seed", 0), "seed", -(2**62), 2**63 - 1)
    return synthetic(n, seed=2 * seed + (0 if train else 1), **kwargs)
