"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its four IDX files.

The library never downloads anything: the files come from the Debian/Ubuntu package
``dataset-fashion-mnist`` or from a folder the user fills once (see :func:`fashion_mnist`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._validate import check_bool, check_nonempty
from .idx import read_idx
from .tensor_data import TensorData

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

#: The environment variable naming a data folder: it holds a ``fashion-mnist`` folder, or the files.
DATA_ENV = "NONROBUST_EXT_DATA"

#: Where system packages put the files. ``dataset-fashion-mnist`` (Debian/Ubuntu) installs them
#: gzipped into /usr/share/datasets/fashion-mnist (checked with ``dpkg -L dataset-fashion-mnist``).
SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_HOW_TO_GET = (
    "To get the data: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs to "
    "/usr/share/datasets/fashion-mnist, found automatically), or download train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from the Zalando "
    "Fashion-MNIST GitHub repository (https://github.com/zalandoresearch/fashion-mnist, folder data/fashion) "
    f"into a folder and pass root=FOLDER or set {DATA_ENV}=FOLDER. "
    "No files are needed for a quick run: data.synthetic(...) / --dataset synthetic generates a learnable task."
)


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _under(folder: Path) -> list[Path]:
    """The folders that may hold the files, given a data folder: the folder itself, its
    ``fashion-mnist`` subfolder, and torchvision's layout (``FashionMNIST/raw``)."""
    return [folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"]


def candidate_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders :func:`fashion_mnist` searches, in order.

    Args:
        root: a folder given by the user; when None, the folders under ``$NONROBUST_EXT_DATA`` and
            then :data:`SYSTEM_DIRS`.
    """
    if root is not None:
        return _under(Path(root).expanduser())
    dirs: list[Path] = []
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        dirs += _under(Path(env).expanduser())
    dirs += [Path(d) for d in SYSTEM_DIRS]
    return dirs


def find_fashion_mnist(root: str | os.PathLike[str] | None = None, *, train: bool = True) -> tuple[Path, Path]:
    """The (images, labels) files of the requested split, from the first folder holding both.

    Raises:
        FileNotFoundError: no searched folder holds both files; the message lists the folders and
            how to get the data.
    """
    names = _FILES[bool(train)]
    searched = candidate_dirs(root)
    for folder in searched:
        found = [_find_file(folder, n) for n in names]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    split = "train" if train else "test"
    where = f"root={str(root)!r}" if root is not None else f"${DATA_ENV} and the system locations"
    raise FileNotFoundError(
        f"Fashion-MNIST {split} files ({names[0]}[.gz], {names[1]}[.gz]) not found; searched ({where}): "
        + ", ".join(str(d) for d in searched)
        + (f" (${DATA_ENV} is not set)" if root is None and not os.environ.get(DATA_ENV, "").strip() else "")
        + ". "
        + _HOW_TO_GET
    )


def fashion_mnist(root: str | os.PathLike[str] | None = None, *, train: bool = True) -> TensorData:
    """Fashion-MNIST: 28x28 grey images of 10 clothing classes, 60000 train / 10000 test.

    Args:
        root: the folder holding the IDX files (plain or ``.gz``), or a folder with a
            ``fashion-mnist`` subfolder holding them. When None, searched in order:
            ``$NONROBUST_EXT_DATA`` (the folder itself, its ``fashion-mnist`` subfolder,
            ``FashionMNIST/raw``), then /usr/share/datasets/fashion-mnist (the Debian/Ubuntu package
            ``dataset-fashion-mnist``).
        train: the training split (``train-*`` files) or the test split (``t10k-*`` files).

    Returns:
        A :class:`TensorData` with x float32 in [0, 1] and classes :data:`FASHION_MNIST_CLASSES`.

    Shape:
        - x: ``[N, 1, 28, 28]``, N = 60000 (train) or 10000 (test)
        - y: ``[N]``

    Raises:
        FileNotFoundError: the files are not in any searched folder; the message lists the folders
            and says how to get the data.
        TypeError: ``root`` not a path, ``train`` not a bool.
        ValueError: a file is damaged, holds no images, or images and labels do not match.
    """
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str, os.PathLike or None, got {type(root).__name__}")
    check_bool(train, "train")
    images_path, labels_path = find_fashion_mnist(root, train=train)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape [N, H, W], got {images.dtype} {list(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape [N], got {labels.dtype} {list(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images"
        )
    check_nonempty(images.shape[0], str(images_path), "images")
    if int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{labels_path}: labels must be in 0..9, found {int(labels.max())}")
    x = images.unsqueeze(1).to(torch.float32).div_(255.0)
    return TensorData(x, labels.to(torch.int64), list(FASHION_MNIST_CLASSES))
