"""Mini-batches of an in-memory set: seeded, resumable shuffling and rank sharding."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .._validate import check_bool, check_int
from ._seeding import generator
from .tensor_data import TensorData


def epoch_order(
    n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False
) -> torch.Tensor:
    """The sample indices rank ``rank`` visits in epoch ``epoch``, in order (see :func:`batches`).

    Raises:
        TypeError, ValueError: as :func:`batches` (``n`` must be an int >= 0).
    """
    n = check_int(n, "n", 0)
    _check_order_arguments(shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                           drop_last=drop_last)
    order = torch.randperm(n, generator=generator(seed, epoch)) if shuffle else torch.arange(n)
    if world_size > 1:
        if drop_last:
            order = order[: (n // world_size) * world_size]
        else:
            total = -(-n // world_size) * world_size
            if total > n:
                # Wrap around (repeatedly if n < world_size) so every rank gets the same count.
                order = order.repeat(-(-total // n))[:total] if n > 0 else order
        order = order[rank::world_size]
    return order


def batches(
    d: TensorData,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate over ``d`` in mini-batches.

    The order of an epoch is a function of ``(seed, epoch)`` alone: a permutation drawn from a
    ``torch.Generator`` seeded by both (torch's global RNG is neither used nor advanced), so a run
    that resumes at epoch ``e`` sees exactly the batches it would have seen without the interruption.

    With ``world_size > 1`` (data-parallel training), all ranks draw the same permutation and rank
    ``r`` takes its elements ``r, r + world_size, ...``. Without ``drop_last`` the permutation is
    first padded by wrapping around to a multiple of ``world_size``, so every rank gets
    ``ceil(N / world_size)`` samples (a few samples are seen twice per epoch); with ``drop_last`` it
    is cut to a multiple instead (``floor(N / world_size)`` each). Either way every rank yields the
    same number of batches, which collective ops need.

    Args:
        d: the set; batches are on ``d``'s device (move the set once with ``d.to(device)``).
        batch_size: samples per batch (>= 1).
        shuffle: draw a new order each epoch; False: the stored order.
        seed: the shuffling seed.
        epoch: the epoch number (>= 0), mixed into the seed.
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: number of data-parallel processes.
        drop_last: drop each rank's final incomplete batch (and the samples that do not divide among
            the ranks).

    Returns:
        An iterator of ``(x, y)`` pairs, ``x`` ``[B, C, H, W]`` and ``y`` ``[B]``; B is ``batch_size``
        except possibly for the last batch.

    Raises:
        TypeError: ``d`` is not a :class:`TensorData`; an int given as something else (``1.5``,
            ``True``); ``shuffle`` / ``drop_last`` not a bool.
        ValueError: ``batch_size < 1``, ``epoch < 0``, ``world_size < 1``, ``rank`` outside
            ``0 .. world_size - 1``.
    """
    if not isinstance(d, TensorData):
        raise TypeError(f"d must be TensorData, got {type(d).__name__}")
    check_int(batch_size, "batch_size", 1)
    order = epoch_order(
        len(d), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size, drop_last=drop_last
    )
    # Generator body kept separate so the argument checks above run at call time, not at the first next().
    return _iterate(d, order.to(d.x.device), batch_size, drop_last)


def _check_order_arguments(*, shuffle: object, seed: object, epoch: object, rank: object, world_size: object,
                           drop_last: object) -> None:
    check_bool(shuffle, "shuffle")
    check_int(seed, "seed")
    check_int(epoch, "epoch", 0)
    check_int(world_size, "world_size", 1)
    check_int(rank, "rank", 0)
    if rank >= world_size:  # type: ignore[operator]
        raise ValueError(f"rank must be < world_size ({world_size}), got {rank}")
    check_bool(drop_last, "drop_last")


def _iterate(
    d: TensorData, order: torch.Tensor, batch_size: int, drop_last: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = order.numel()
    stop = (n // batch_size) * batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield d.x[idx], d.y[idx]


def num_batches(n: int, batch_size: int, *, world_size: int = 1, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields per rank for a set of ``n`` samples.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: ``n < 0``, ``batch_size < 1`` or ``world_size < 1``.
    """
    check_int(n, "n", 0)
    check_int(batch_size, "batch_size", 1)
    check_int(world_size, "world_size", 1)
    check_bool(drop_last, "drop_last")
    per_rank = n if world_size == 1 else (n // world_size if drop_last else -(-n // world_size))
    return per_rank // batch_size if drop_last else -(-per_rank // batch_size)
