"""Datasets as in-memory tensors, and the source/target splits of the transfer study.

The study's default stands Fashion-MNIST in for ImageNet: the source task ("pretraining") is one
half of the classes, the target task ("fine-tuning") the other half, relabelled and few-shot::

    from nonrobust_ext import data

    train, test = data.fashion_mnist(train=True), data.fashion_mnist(train=False)
    split = data.source_target_split(train, test, source_classes=[0, 2, 4, 6, 8],
                                     target_classes=[1, 3, 5, 7, 9], shots_per_class=50, seed=0)
    for epoch in range(epochs):
        for x, y in data.batches(split.source_train, 128, shuffle=True, seed=0, epoch=epoch):
            ...

Public surface:
    TensorData             an in-memory labelled image set (x [N, C, H, W] float in [0, 1], y int64)
    read_idx               IDX files (MNIST format), gzipped or not
    fashion_mnist          Fashion-MNIST from its IDX files (root, $NONROBUST_EXT_DATA, the Debian package)
    cifar                  CIFAR-10/100 python batches, through a restricted unpickler
    image_folder           root/<class>/<image> folders (needs Pillow)
    synthetic              a learnable task that needs no files
    load                   any of the above by name
    SourceTarget, source_target_split, few_shot     class splits, validation carving, few-shot sets
    batches                seeded, resumable, rank-sharded mini-batches
"""

from __future__ import annotations

from .batching import batches, epoch_order, num_batches
from .cifar_batches import SafeUnpickler, cifar, safe_load
from .fmnist import DATA_ENV, FASHION_MNIST_CLASSES, fashion_mnist
from .folder import IMAGE_EXTENSIONS, image_folder
from .idx import read_idx
from .registry import DATASETS, load
from .splits import SourceTarget, few_shot, source_target_split
from .synth import synthetic
from .tensor_data import TensorData

__all__ = [
    "DATASETS", "DATA_ENV", "FASHION_MNIST_CLASSES", "IMAGE_EXTENSIONS", "SafeUnpickler",
    "SourceTarget", "TensorData", "batches", "cifar", "epoch_order", "few_shot", "fashion_mnist", "image_folder",
    "load", "num_batches", "read_idx", "safe_load", "source_target_split", "synthetic",
]
