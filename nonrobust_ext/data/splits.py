"""Source/target class splits, validation sets carved from the training data, and few-shot subsets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

import torch

from .._validate import check_int, check_ints
from ._seeding import generator
from .tensor_data import TensorData

#: Default validation images per class (see :func:`source_target_split`).
SOURCE_VAL_PER_CLASS = 100
TARGET_VAL_PER_CLASS = 50

# Streams of the per-class generators, so source, target and few_shot draws never share randomness.
_SOURCE_STREAM, _TARGET_STREAM, _FEW_SHOT_STREAM = 1, 2, 3

ValPerClass = Union[int, tuple[int, int], None]


@dataclass(eq=False)
class SourceTarget:
    """A source task (the "pretraining" classes) and a target task (the "fine-tuning" classes) of
    one dataset, each relabelled ``0..k-1``, with train / validation / test sets.

    ``source_classes`` and ``target_classes`` hold the original label ids in new-label order:
    new label ``i`` of the target task is original label ``target_classes[i]``.
    """

    source_train: TensorData
    source_val: TensorData
    source_test: TensorData
    target_train: TensorData
    target_val: TensorData
    target_test: TensorData
    source_classes: list[int]
    target_classes: list[int]

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{k}={len(getattr(self, k))}"
            for k in ("source_train", "source_val", "source_test", "target_train", "target_val", "target_test")
        )
        return f"SourceTarget({sizes}, source_classes={self.source_classes}, target_classes={self.target_classes})"


def _class_list(value: object, name: str, num_classes: int, *, allow_empty: bool = False) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of class ids, got {type(value).__name__}")
    out = list(check_ints(list(value), name, nonempty=not allow_empty))
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{name} must hold class ids in 0..{num_classes - 1}, got {bad}")
    if len(set(out)) != len(out):
        dup = sorted({c for c in out if out.count(c) > 1})
        raise ValueError(f"{name} lists classes more than once: {dup}")
    return out


def _relabel(d: TensorData, index: torch.Tensor, classes: list[int]) -> TensorData:
    """The samples at ``index`` (sorted, so the original order is kept), labels mapped to positions in ``classes``."""
    index = index.sort().values
    lut = torch.full((d.num_classes,), -1, dtype=torch.int64)
    lut[torch.tensor(classes, dtype=torch.int64)] = torch.arange(len(classes))
    sub = d.subset(index)
    y = lut.to(sub.y.device)[sub.y]
    return TensorData(sub.x, y, [d.classes[c] for c in classes])


def _class_members(d: TensorData, classes: list[int]) -> dict[int, torch.Tensor]:
    y = d.y.cpu()
    return {c: torch.nonzero(y == c).flatten() for c in classes}


def source_target_split(
    train: TensorData,
    test: TensorData,
    *,
    source_classes: Iterable[int],
    target_classes: Iterable[int],
    shots_per_class: int | None = None,
    val_per_class: ValPerClass = None,
    seed: int = 0,
) -> SourceTarget:
    """Split a dataset into a source task and a disjoint target task, with validation sets carved
    from the training data and an optional few-shot target training set.

    For each class, the class's training samples are shuffled once by a generator seeded with
    ``(seed, side, class id)``; validation takes the first ``v`` of that order and the training set
    the next ``shots_per_class`` (or all the rest). So validation and training samples are disjoint,
    and, for one seed, a smaller few-shot set is a subset of a larger one with the same validation
    set (unless the default target cap below changes ``v``). Test sets are the whole ``test`` set of
    each side's classes; nothing is drawn from them.

    Validation size ``v`` per class (``val_per_class``):
        - None (default): source ``min(100, n_c // 2)``; target ``min(50, n_c - shots_per_class)``
          with few shots (what is left after the shots, possibly 0), ``min(50, n_c // 2)`` without.
          ``n_c`` is the class's number of training samples.
        - an int: that many for every class of both sides;
        - a pair ``(source, target)``: per side.
        An explicit count that leaves a class without training samples is an error.

    Args:
        train: the training set (source/target train and validation come from here).
        test: the test set, with the same class names as ``train``.
        source_classes: original class ids of the source task, in new-label order. May be empty: a
            target-only split, for a source model pretrained elsewhere (the source sets are empty).
        target_classes: original class ids of the target task, in new-label order; disjoint from
            ``source_classes``.
        shots_per_class: target training samples per class; None: all that validation leaves.
        val_per_class: validation samples per class, see above.
        seed: the draws' seed; the same seed gives the same split.

    Returns:
        A :class:`SourceTarget`; each set's labels are ``0..k-1`` and its ``classes`` the chosen names.

    Raises:
        TypeError: ``train`` / ``test`` not :class:`TensorData`; class ids, counts or ``seed`` not ints.
        ValueError: empty, repeated, out-of-range or overlapping classes; ``train`` and ``test`` with
            different classes; a negative count; a class with too few training samples for the
            requested counts.
    """
    if not isinstance(train, TensorData) or not isinstance(test, TensorData):
        raise TypeError(
            f"train and test must be TensorData, got {type(train).__name__} and {type(test).__name__}"
        )
    if train.classes != test.classes:
        raise ValueError(
            f"train and test must have the same classes, got {train.num_classes} and {test.num_classes} "
            f"names ({train.classes[:3]}... vs {test.classes[:3]}...)"
        )
    src = _class_list(source_classes, "source_classes", train.num_classes, allow_empty=True)
    tgt = _class_list(target_classes, "target_classes", train.num_classes)
    overlap = sorted(set(src) & set(tgt))
    if overlap:
        raise ValueError(f"source_classes and target_classes must be disjoint, both contain {overlap}")
    if shots_per_class is not None:
        check_int(shots_per_class, "shots_per_class", 1)
    check_int(seed, "seed")
    if val_per_class is None:
        src_val: int | None = None
        tgt_val: int | None = None
    elif isinstance(val_per_class, tuple):
        if len(val_per_class) != 2:
            raise ValueError(f"val_per_class as a pair must be (source, target), got {val_per_class!r}")
        src_val = check_int(val_per_class[0], "val_per_class[0]", 0)
        tgt_val = check_int(val_per_class[1], "val_per_class[1]", 0)
    else:
        src_val = tgt_val = check_int(val_per_class, "val_per_class", 0)

    members = _class_members(train, src + tgt)

    def carve(classes: list[int], stream: int, val: int | None, shots: int | None, side: str):
        train_idx, val_idx = [], []
        for c in classes:
            idx = members[c]
            n_c = idx.numel()
            name = f"class {c} ({train.classes[c]!r})"
            if shots is not None and n_c < shots:
                raise ValueError(
                    f"shots_per_class={shots} but {side} {name} has only {n_c} training samples"
                )
            if val is None:
                default = SOURCE_VAL_PER_CLASS if stream == _SOURCE_STREAM else TARGET_VAL_PER_CLASS
                v = min(default, n_c - shots) if shots is not None else min(default, n_c // 2)
            else:
                v = val
                need = v + (shots if shots is not None else 1)
                if n_c < need:
                    raise ValueError(
                        f"val_per_class={v}{f' plus shots_per_class={shots}' if shots else ''} needs {need} "
                        f"training samples per class, but {side} {name} has {n_c}"
                    )
            if n_c - v < 1:
                raise ValueError(f"{side} {name} has {n_c} training samples: too few to keep any for training")
            order = idx[torch.randperm(n_c, generator=generator(seed, stream, c))]
            val_idx.append(order[:v])
            train_idx.append(order[v:] if shots is None else order[v : v + shots])
        return _cat(train_idx), _cat(val_idx)

    s_train, s_val = carve(src, _SOURCE_STREAM, src_val, None, "source")
    t_train, t_val = carve(tgt, _TARGET_STREAM, tgt_val, shots_per_class, "target")
    test_members = _class_members(test, src + tgt)
    s_test = _cat([test_members[c] for c in src])
    t_test = _cat([test_members[c] for c in tgt])
    return SourceTarget(
        source_train=_relabel(train, s_train, src),
        source_val=_relabel(train, s_val, src),
        source_test=_relabel(test, s_test, src),
        target_train=_relabel(train, t_train, tgt),
        target_val=_relabel(train, t_val, tgt),
        target_test=_relabel(test, t_test, tgt),
        source_classes=src,
        target_classes=tgt,
    )


def _cat(indices: list[torch.Tensor]) -> torch.Tensor:
    """Index tensors joined; an empty int64 index for none (an empty source side)."""
    return torch.cat(indices) if indices else torch.empty(0, dtype=torch.int64)


def few_shot(d: TensorData, shots_per_class: int, *, seed: int = 0) -> TensorData:
    """``shots_per_class`` samples of every class of ``d``, drawn with ``seed``.

    Each class's samples are shuffled by a generator seeded with ``(seed, class id)`` and the first
    ``shots_per_class`` kept, so for one seed a smaller set is a subset of a larger one. The result
    keeps ``d``'s labels, classes and sample order.

    Args:
        d: the set to draw from; every class ``0..num_classes-1`` must have ``shots_per_class`` samples.
        shots_per_class: samples per class (>= 1).
        seed: the draw's seed.

    Returns:
        A :class:`TensorData` of ``num_classes * shots_per_class`` samples.

    Raises:
        TypeError: ``d`` not :class:`TensorData`; ``shots_per_class`` or ``seed`` not an int.
        ValueError: ``shots_per_class < 1``, or a class has fewer than ``shots_per_class`` samples (the
            class is named).
    """
    if not isinstance(d, TensorData):
        raise TypeError(f"d must be TensorData, got {type(d).__name__}")
    check_int(shots_per_class, "shots_per_class", 1)
    check_int(seed, "seed")
    members = _class_members(d, list(range(d.num_classes)))
    picked = []
    for c, idx in members.items():
        if idx.numel() < shots_per_class:
            raise ValueError(
                f"shots_per_class={shots_per_class} but class {c} ({d.classes[c]!r}) has only {idx.numel()} samples"
            )
        order = torch.randperm(idx.numel(), generator=generator(seed, _FEW_SHOT_STREAM, c))
        picked.append(idx[order[:shots_per_class]])
    index = torch.cat(picked).sort().values if picked else torch.empty(0, dtype=torch.int64)
    return d.subset(index)
