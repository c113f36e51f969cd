"""The data of every seed: the dataset loaded once, split into the source task (standing in for
ImageNet) and the few-shot target task, and the subsamples that evaluation and analyses use.

Every draw here comes from a generator seeded by the seed (never torch's global RNG), so splitting
every seed up front, before any training, gives the same sets as splitting each just before use.
"""

from __future__ import annotations

from typing import Any

import torch

from ... import data as nxdata
from .config import StudyConfig


def load(config: StudyConfig) -> tuple[nxdata.TensorData, nxdata.TensorData]:
    """The dataset's training and test sets.

    Raises:
        FileNotFoundError: the dataset's files are missing (the message says how to get them, or to
            use generated data).
    """
    try:
        return (nxdata.load(config.dataset, root=config.data_root, train=True),
                nxdata.load(config.dataset, root=config.data_root, train=False))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}\n\nOr run the study on generated data: --dataset synthetic") from None


def split(config: StudyConfig, train_set: nxdata.TensorData, test_set: nxdata.TensorData,
          seed: int) -> nxdata.SourceTarget:
    """One seed's source and target tasks (train / validation / test each), ``source_per_class``
    images per source class at most.

    Raises:
        ValueError: classes out of the dataset's range, or too few images of a class for ``shots``.
    """
    # The split would say "shots_per_class"; the user set "shots".
    counts = torch.bincount(train_set.y.cpu(), minlength=train_set.num_classes)
    for c in config.target_classes:
        if c < len(counts) and counts[c] < config.shots:
            raise ValueError(f"shots is {config.shots} but target class {c} ({train_set.classes[c]!r}) has only "
                             f"{int(counts[c])} training images")
    # With ImageNet weights the source task is ImageNet: no source classes are drawn from the dataset.
    source = [] if config.imagenet_source else list(config.source_classes)
    tasks = nxdata.source_target_split(
        train_set, test_set, source_classes=source, target_classes=list(config.target_classes),
        shots_per_class=config.shots, seed=seed,
    )
    if config.source_per_class is not None and source:
        tasks.source_train = nxdata.few_shot(tasks.source_train, min(config.source_per_class,
                                             smallest_class(tasks.source_train)), seed=seed)
    return tasks


def smallest_class(d: nxdata.TensorData) -> int:
    """The number of samples of ``d``'s smallest class."""
    return int(torch.bincount(d.y, minlength=d.num_classes).min())


def normalisation(source_x: torch.Tensor) -> dict[str, Any]:
    """Input normalisation every model of a seed shares: the source training images' channel statistics."""
    return {"in_channels": source_x.shape[1], "mean": source_x.mean(dim=(0, 2, 3)).tolist(),
            "std": source_x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()}


def subsample(d: nxdata.TensorData, n: int | None, seed: int) -> nxdata.TensorData:
    """At most ``n`` samples of ``d``, drawn with ``seed``, in their original order."""
    if n is None or len(d) <= n:
        return d
    keep = torch.randperm(len(d), generator=torch.Generator().manual_seed(seed))[:n]
    return d.subset(keep.sort().values)


__all__ = ["load", "normalisation", "smallest_class", "split", "subsample"]
