"""CIFAR-10 / CIFAR-100 from the official "python version" folders, read without trusting pickle.

The batches are pickled dicts. ``pickle.load`` on a file runs whatever callables the file names
(``os.system`` included), so a downloaded or shared file is unpickled here by :class:`SafeUnpickler`,
which resolves only the few globals a pickled numpy array needs and refuses everything else.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._validate import check_bool, check_nonempty
from .fmnist import DATA_ENV
from .tensor_data import TensorData

# The globals a pickled dict of numpy arrays and lists may name: array and dtype reconstruction
# (numpy 1 spells the module numpy.core, numpy 2 numpy._core; protocol 5 uses _frombuffer, numpy
# scalars use scalar), bytes as written by protocol 2 under Python 3 (_codecs.encode), and a few
# inert builtin containers (Python 2 pickles spell the module __builtin__).
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [(m, "_reconstruct") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "scalar") for m in ("numpy.core.multiarray", "numpy._core.multiarray")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [(m, n) for m in ("builtins", "__builtin__") for n in ("set", "frozenset", "bytearray")]
)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as e:  # numpy is not a runtime dependency of the library
        raise ImportError(
            "reading CIFAR batches needs numpy (the batches are pickled numpy arrays): pip install numpy"
        ) from e
    return numpy


def _resolve(module: str, name: str) -> Any:
    np = _numpy()
    if module == "numpy":
        return getattr(np, name)
    if module in ("builtins", "__builtin__"):
        return {"set": set, "frozenset": frozenset, "bytearray": bytearray}[name]
    if module == "_codecs":
        import codecs

        return codecs.encode
    # numpy.core.* / numpy._core.*: whichever the installed numpy has, without importing the
    # deprecated numpy.core shim on numpy 2.
    sub = module.split(".", 2)[2]  # "multiarray" or "numeric"
    try:
        core = __import__(f"numpy._core.{sub}", fromlist=[name])
    except ImportError:
        core = __import__(f"numpy.core.{sub}", fromlist=[name])
    return getattr(core, name)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only reconstructs numpy arrays, numpy scalars and plain Python data.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class from some
    module, ...) raises :class:`pickle.UnpicklingError` naming the file and the global, before
    anything is called.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>") -> None:
        # encoding="bytes": the official batches were written by Python 2; their str keys and the
        # numpy payloads stay bytes instead of being decoded as ASCII.
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _resolve(module, name)
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to unpickle the global '{module}.{name}': only numpy arrays and plain "
            "Python data are allowed in dataset files (a pickle that names other globals can run arbitrary code)"
        )


def safe_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`.

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file names a global outside the allow list, or is not a pickle.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    try:
        return SafeUnpickler(io.BytesIO(raw), source=str(path)).load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # truncated or not a pickle at all: EOFError, ValueError, KeyError, ...
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


def _get(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, Mapping):
        raise ValueError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = ", ".join(repr(k) for k in list(d)[:10])
    raise ValueError(f"{path}: missing key {key!r} (found keys: {keys})")


def _names(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


_LAYOUT = {
    # name: (folder, train files, test files, meta file, label key, label-names key)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def _find_folder(root: Path | None, name: str) -> Path:
    folder_name, train_files, _, meta, _, _ = _LAYOUT[name]
    if root is None:
        env = os.environ.get(DATA_ENV, "").strip()
        if not env:
            raise FileNotFoundError(
                f"cifar: root is None and ${DATA_ENV} is not set; pass root= the folder holding {folder_name}/ "
                "(the official CIFAR 'python version' archive, extracted)"
            )
        root = Path(env).expanduser()
    searched = [root / folder_name, root]
    for folder in searched:
        if (folder / meta).is_file():
            return folder
    raise FileNotFoundError(
        f"cifar: {name} not found: no {meta} in " + ", ".join(str(p) for p in searched)
        + f". Extract the official CIFAR 'python version' archive (folder {folder_name}/ with "
        f"{', '.join(train_files[:2])}{', ...' if len(train_files) > 2 else ''}, {meta}) under root"
    )


def cifar(
    root: str | os.PathLike[str] | None, *, name: str = "cifar10", train: bool = True
) -> TensorData:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python-pickle batches.

    Args:
        root: the folder holding ``cifar-10-batches-py`` / ``cifar-100-python``, or that folder itself.
            None: ``$NONROBUST_EXT_DATA``.
        name: ``"cifar10"`` (data_batch_1..5, test_batch, batches.meta) or ``"cifar100"`` (train,
            test, meta; the 100 fine labels).
        train: the training batches or the test batch.

    Returns:
        A :class:`TensorData` with x float32 in [0, 1] and the class names from the meta file.

    Shape:
        - x: ``[N, 3, 32, 32]`` (N = 50000 train / 10000 test for the official files)
        - y: ``[N]``

    Raises:
        FileNotFoundError: the folder or one of its files is missing (named in the message).
        pickle.UnpicklingError: a file names a global other than numpy array reconstruction.
        TypeError: ``name`` not a str, ``root`` not a path, ``train`` not a bool.
        ValueError: a file's content is not a CIFAR batch (named in the message), or the batches hold
            no images.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str ('cifar10' or 'cifar100'), got {type(name).__name__}")
    if name.lower().replace("-", "") not in _LAYOUT:
        raise ValueError(f"name must be 'cifar10' or 'cifar100', got {name!r}")
    check_bool(train, "train")
    name = name.lower().replace("-", "")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str, os.PathLike or None, got {type(root).__name__}")
    folder = _find_folder(None if root is None else Path(root).expanduser(), name)
    _, train_files, test_files, meta_file, label_key, names_key = _LAYOUT[name]
    np = _numpy()

    classes = _names(_get(safe_load(folder / meta_file), names_key, folder / meta_file))
    xs, ys = [], []
    for fname in train_files if train else test_files:
        path = folder / fname
        batch = safe_load(path)
        data = np.asarray(_get(batch, "data", path))
        labels = np.asarray(_get(batch, label_key, path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: 'data' must be uint8 of shape [N, 3072], got {data.dtype} {list(data.shape)}")
        if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
            raise ValueError(f"{path}: {label_key!r} must hold {data.shape[0]} labels, got shape {list(labels.shape)}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"{path}: labels must be in 0..{len(classes) - 1} ({len(classes)} names in {meta_file}), "
                f"found {int(labels.min())}..{int(labels.max())}"
            )
        # Rows are 1024 red, 1024 green, 1024 blue values, each 32x32 row-major: channel-first already.
        # np.array copies: arrays unpickled from protocol-5 buffers are read-only, which torch warns about.
        xs.append(torch.from_numpy(np.array(data, dtype=np.uint8, order="C")).view(-1, 3, 32, 32))
        ys.append(torch.from_numpy(labels.astype(np.int64)))
    x = torch.cat(xs).to(torch.float32).div_(255.0)
    check_nonempty(len(x), f"{folder} ({'train' if train else 'test'} batches)", "images")
    return TensorData(x, torch.cat(ys), classes)
