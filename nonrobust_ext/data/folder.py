"""Labelled images from a folder tree: ``root/<class name>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import torch

from .._validate import check_int, check_ints
from .tensor_data import TensorData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

Size = Union[int, tuple[int, int], None]


def _pillow() -> Any:
    # Pillow is optional: only this loader needs it, so import it when called.
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("data.image_folder needs Pillow to decode images: pip install pillow") from e
    return Image


def _parse_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        pair = check_ints(size, "size", 1)
        if len(pair) != 2:
            raise ValueError(f"size as a sequence must be a pair (height, width), got {tuple(pair)}")
        return pair[0], pair[1]
    side = check_int(size, "size", 1)  # TypeError for anything but None, an int or a pair
    return side, side


def image_folder(root: str | os.PathLike[str], *, size: Size = None, channels: int = 3) -> TensorData:
    """Images from ``root/<class name>/*.png|jpg|jpeg|bmp``; classes are the subfolders sorted by name.

    Args:
        root: the folder whose subfolders are the classes (hidden ones, starting with ".", are skipped;
            files in ``root`` itself and files with other extensions are ignored).
        size: resize every image to ``size`` (an int: square; a pair: ``(height, width)``), bilinear.
            None: keep the sizes, which must then all be equal.
        channels: 3 (RGB) or 1 (grey); images are converted to it.

    Returns:
        A :class:`TensorData` with x float32 in [0, 1]; samples ordered by class, then by file name.

    Shape:
        - x: ``[N, channels, H, W]``
        - y: ``[N]``

    Raises:
        TypeError: ``root`` not a path; ``size`` or ``channels`` not ints.
        ImportError: Pillow is not installed (``pip install pillow``).
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``size < 1``; ``channels`` not 1 or 3; no class folders, a class folder without
            images, or (``size=None``) an image whose
            size differs from the first one (both files are named).
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
    if check_int(channels, "channels") not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    hw = _parse_size(size)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder: root is not a folder: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"image_folder: {root} has no class subfolders (expected root/<class name>/<images>)")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        images = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise ValueError(f"image_folder: class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += [(p, label) for p in images]

    Image = _pillow()
    mode = "RGB" if channels == 3 else "L"
    resample = getattr(Image, "Resampling", Image).BILINEAR
    x = None
    first: Path | None = None
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if hw is not None and im.size != (hw[1], hw[0]):
                    im = im.resize((hw[1], hw[0]), resample=resample)  # Pillow sizes are (width, height)
                w, h = im.size
                pixels = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
        except OSError as e:
            raise ValueError(f"image_folder: cannot read image {path}: {e}") from e
        if x is None:
            first = path
            x = torch.empty(len(files), channels, h, w, dtype=torch.uint8)
        elif (h, w) != tuple(x.shape[2:]):
            raise ValueError(
                f"image_folder: {path} is {h}x{w} (HxW) but {first} is {x.shape[2]}x{x.shape[3]}; "
                "pass size= to resize every image"
            )
        x[i] = pixels.view(h, w, channels).permute(2, 0, 1)
    assert x is not None
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return TensorData(x.to(torch.float32).div_(255.0), y, [d.name for d in class_dirs])
