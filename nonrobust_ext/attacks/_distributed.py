"""Evaluation over several processes (``torchrun``): each rank attacks its shard of the samples, and
the per-sample answers are gathered so that every rank returns the same result, the one a single
process would.

Everything here is a no-op in a single process (``torch.distributed`` not initialised, or a world of
one), so the evaluation code calls it unconditionally when asked to run distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def require_group(distributed: bool) -> None:
    """``distributed=True`` needs an initialised process group (``torchrun`` + ``init_process_group``)."""
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed=True needs an initialised torch.distributed process group: run under "
                           "torchrun and call torch.distributed.init_process_group() first")


def shard(n: int, rank: int | None = None) -> slice:
    """A rank's contiguous share of ``n`` items (default: this rank's; the first ``n % world`` ranks take
    one more)."""
    this, size = world()
    rank = this if rank is None else rank
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def gather_rows(part: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every rank's rows, in rank order, on every rank: ``part`` is this rank's, ``counts[r]`` the
    number of rows rank ``r`` holds (known to every rank, so no sizes travel).

    The parts are padded to the longest for the collective (gloo's all_gather needs equal shapes) and
    the padding is dropped.
    """
    rank, size = world()
    if size == 1:
        return part
    if part.shape[0] != counts[rank]:
        raise RuntimeError(f"rank {rank} holds {part.shape[0]} rows but counts says {counts[rank]}")
    wire = part.to(torch.uint8) if part.dtype == torch.bool else part  # bool is no collective dtype on gloo
    padded = wire.new_zeros((max(counts), *part.shape[1:]))
    padded[: part.shape[0]] = wire
    gathered = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(gathered, padded.contiguous())
    out = torch.cat([g[:c] for g, c in zip(gathered, counts, strict=True)])
    return out.bool() if part.dtype == torch.bool else out


def sum_parts_(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks, in place, on every rank: each rank fills its own entries and leaves
    the others at zero, so the sum is every rank's entries together (bool travels as uint8)."""
    if world()[1] == 1:
        return t
    wire = (t.to(torch.uint8) if t.dtype == torch.bool else t).to(_wire_device())
    dist.all_reduce(wire)
    t.copy_(wire.bool() if t.dtype == torch.bool else wire)
    return t


def _wire_device() -> torch.device:
    """Where a collective's tensors must be: this rank's GPU under NCCL, the CPU otherwise (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_all(values: list[float], device: torch.device | None = None) -> list[float]:
    """``values`` summed over the ranks (float64, so counts stay exact), on every rank."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def max_all(value: float, device: torch.device | None = None) -> float:
    """The largest ``value`` over the ranks (a stage's wall-clock time is the slowest rank's)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


__all__ = ["gather_rows", "max_all", "require_group", "shard", "sum_all", "sum_parts_", "world"]
