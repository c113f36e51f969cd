"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a score-based random search
that needs no gradient, only the model's logits, and is the last stage of AutoAttack.

Each iteration changes the current point inside one random square window per sample and keeps the
change where it lowers the margin ``z_y - max_{k != y} z_k``. The windows are drawn per sample and
written with masks over the whole batch (the window side is the same for the batch at a given
iteration, as in the paper); samples leave the batch as soon as they are fooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, overload

import torch

from .. import ops
from .._params import Param
from .._validate import check_bool, check_int, check_real
from ._common import (
    AttackResult,
    LogitsSelector,
    Model,
    check_batch,
    check_finite_logits,
    check_logits,
    check_model,
    check_selector,
    eval_mode,
    margin,
    resolve_amp,
    resolve_generator,
    select_logits,
    succeeded,
)
from .threat import Bounds, ThreatModel

# The paper's schedule of the window's share of the image: p_init is halved after each of these
# iterations of a 10000-query budget (other budgets stretch it proportionally, as the authors do).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_SCHEDULE_BUDGET = 10000
# An L-inf proposal that changes nothing (its window already holds the drawn signs, or the bounds
# cut every change) would waste a query; its signs are redrawn this many times at most (drawn up front:
# the op takes the first draw that changes the point). The authors redraw until it changes, which
# loops forever where the bounds allow no change.
_REDRAWS = 10
# Added to norms before dividing, as the authors do, so that an all-zero window or perturbation
# stays zero instead of becoming NaN.
_TINY = 1e-12


@dataclass
class SquareResult(AttackResult):
    """What the Square Attack found, per sample: an :class:`AttackResult` (``loss`` is
    ``max_{k != y} z_k - z_y`` at ``x_adv``, positive where it fools the model; ``steps`` the proposals
    the kept run evaluated, until the sample was fooled; ``restart`` the kept run) with

    Attributes:
        queries: ``[B]`` long, the model queries spent on the sample over all runs: the clean check
            (1), then per run the initialisation (1) and each proposal (1). Samples the model already
            misclassifies, or with ``eps`` 0, spend 1.
    """

    queries: torch.Tensor


@overload
def square(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, norm: str = ..., queries: int = ...,
    p_init: float = ..., restarts: int = ..., bounds: Bounds = ..., scale: Param = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., logits: LogitsSelector = ..., amp: torch.dtype | None = ...,
    return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def square(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, norm: str = ..., queries: int = ...,
    p_init: float = ..., restarts: int = ..., bounds: Bounds = ..., scale: Param = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., logits: LogitsSelector = ..., amp: torch.dtype | None = ...,
    return_result: Literal[True],
) -> SquareResult: ...
def square(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    logits: LogitsSelector = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | SquareResult:
    r"""Square Attack, untargeted, with the margin loss: a random search over square windows.

    With ``m(x) = z_y(x) - max_{k != y} z_k(x)`` (the sample is fooled when another class wins):

    1. Start from ``x_0``: L-inf, vertical stripes, every column of every channel at ``x +- eps``
       (one random sign each); L2, a grid of 5x5 square blocks (side ``min(H, W) // 5``), each a
       "pulse" (two halves of opposite sign made of concentric rectangles weighted ``1 / (k + 1)^2``)
       with a random sign per channel, the whole scaled to norm ``eps``. Clipped to the bounds.
    2. At iteration ``i`` the window side is ``s = round(sqrt(p_i * H * W))`` where ``p_i`` is
       ``p_init`` halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a
       10000-query budget, stretched to ``queries``. L-inf: ``1 <= s <= min(H, W) - 1``; each channel
       of one window at a random position is set to ``x +- eps`` (random sign per channel). L2: ``s``
       odd and at least 3; the perturbation in a second random window is removed and a pulse with a
       random sign per channel is added to the (normalised) perturbation in the first one, whose
       norm takes up the mass freed from the second window and what the ball has left; the whole
       perturbation is rescaled to norm ``eps``. Each proposal is clipped to the bounds.
    3. A proposal is kept where its margin is lower than the current one (or it fools the model),
       so the margin of a sample never increases. A fooled sample leaves the batch: later iterations
       run the model only on the samples not yet fooled.

    Samples the model misclassifies at the start (and samples with ``eps`` 0) are returned as ``x``.
    Restarts after the first attack only the samples not yet fooled, from a fresh initialisation, and
    keep a later run's point where it fools the model or has a lower margin.

    Differences from the authors' code (``square_attack`` and AutoAttack's port), all deliberate:

    - Window positions are uniform over every position the window fits at; theirs never place it
      at the last row or column (an exclusive upper bound). AutoAttack's port also draws one
      position for the whole batch per iteration; here each sample draws its own, as in the paper.
    - An L-inf proposal that changes nothing is redrawn at most 10 times (theirs until it changes,
      which never ends where the bounds allow no change), and then evaluated as it is.
    - The L2 pulse is transposed at random per sample and block (theirs once per call, shared
      by the batch); the initial grid keeps only the blocks that fit inside the image.
    - Budget: ``queries`` counts the initialisation, so a run makes ``queries - 1`` proposals; the
      clean check counts one more query per sample (see :attr:`SquareResult.queries`).
    - Threat model in ``scale`` units and per-channel bounds, as every attack of this package.

    The model runs under ``torch.no_grad()`` in eval mode and every submodule's mode is restored
    afterwards; no gradient is computed; ``x`` is never modified. All randomness is drawn from the
    generator on the CPU and moved to ``x``'s device, so a seed gives the same attack on any device
    (up to the model's own rounding there). The search runs on a contiguous copy of ``x`` (so the
    memory format does not change the result) and returns ``x``'s layout.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch of images ``[B, C, H, W]`` inside ``bounds`` (Square needs the 2-D image
            plane to place its windows).
        y: ``[B]`` true labels.
        eps: radius, a number or one per sample (``[B]``), >= 0, in threat-model units (see ``scale``).
        norm: ``"linf"`` or ``"l2"``.
        queries: the query budget per sample and run (>= 1): the initialisation and ``queries - 1``
            proposals. AutoAttack uses 5000.
        p_init: in ``(0, 1]``, the initial share of the image a window covers (0.8 in AutoAttack;
            the authors use 0.05 for L-inf and 0.1 for L2 on ImageNet).
        restarts: number of runs (>= 1), see above.
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model); number or ``[C]``.
        seed, generator: source of all randomness (default: torch's global generator).
        logits: where the logits are in the model's output: an index, a key or a callable.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs the model under ``torch.autocast``; the
            iterates and margins stay in ``x``'s dtype (float32 for half-precision inputs).
        return_result: return a :class:`SquareResult` instead of the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or with
        ``return_result=True`` a :class:`SquareResult`.

    Shape:
        x: ``[B, C, H, W]``; y: ``[B]``; eps: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    if x.dim() != 4:
        raise ValueError("x must be a batch of images [B, C, H, W]: the Square Attack places square windows on "
                         f"the image plane, got shape {tuple(x.shape)}")
    queries = check_int(queries, "queries", 1)
    p_init = check_real(p_init, "p_init", low=0.0, high=1.0, low_inclusive=False)
    restarts = check_int(restarts, "restarts", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale)
    logits = check_selector(logits)
    return_result = check_bool(return_result, "return_result")
    precision = resolve_amp(amp, x)
    generator = resolve_generator(seed, generator)
    y = y.long()
    compute_dtype = threat.scale.dtype
    clean = x.detach().contiguous().to(compute_dtype)

    def query(x_rows: torch.Tensor, y_rows: torch.Tensor, check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(margin, fooled)`` of the rows, one model query each."""
        with precision.autocast():
            z = select_logits(model(x_rows.to(x.dtype)), logits)
        if check:
            check_logits(z, y_rows)
        z = check_finite_logits(z).to(compute_dtype)
        return margin(z, y_rows), succeeded(z, y_rows, targeted=False)

    batch = x.shape[0]
    device = x.device
    with torch.no_grad(), eval_mode(model):
        best_margin, success = query(clean, y, check=True)
        best = clean.clone()
        spent = torch.ones(batch, dtype=torch.long, device=device)
        steps = torch.zeros(batch, dtype=torch.long, device=device)
        restart = torch.zeros(batch, dtype=torch.long, device=device)
        # A zero radius leaves nothing to search: such samples keep x.
        assert threat.eps is not None
        attackable = ~success & (threat.eps > 0)
        for r in range(restarts):
            todo = (attackable & ~success).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            run = _Run(query, clean[todo], y[todo], threat.rows(todo), generator)
            x_run, margin_run, fooled_run, steps_run, spent_run = run.search(queries, p_init)
            spent[todo] += spent_run
            # The first run's point is kept even where it has a higher margin than x: it is the search's
            # starting point, and x itself was already checked.
            keep = fooled_run | (margin_run < best_margin[todo]) if r > 0 else torch.ones_like(fooled_run)
            rows = todo[keep]
            best[rows] = x_run[keep]
            best_margin[rows] = margin_run[keep]
            success[rows] = fooled_run[keep]
            steps[rows] = steps_run[keep]
            restart[rows] = r

    x_adv = torch.empty_like(x)
    x_adv.copy_(best.to(x.dtype))
    if not return_result:
        return x_adv
    return SquareResult(x_adv=x_adv, success=success, loss=-best_margin, steps=steps, restart=restart,
                        queries=spent)


class _Run:
    """One run of the search on the samples of one restart (all rows attackable at the start)."""

    def __init__(
        self,
        query: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        generator: torch.Generator | None,
    ) -> None:
        self.query, self.x, self.y, self.threat, self.generator = query, x, y, threat, generator
        self.channels, self.height, self.width = x.shape[1:]
        self.unit = threat.channel_view(threat.scale, x)  # [1, C, 1, 1]
        assert threat.eps is not None
        self.eps = threat.eps.reshape(-1, 1, 1, 1)  # [n, 1, 1, 1]
        if threat.norm == "linf":
            # Every L-inf iterate is made of the two faces of the box, clipped to the bounds: computed
            # once, a proposal only selects between them and the current point.
            self.faces = (threat.clip(x - self.unit * self.eps), threat.clip(x + self.unit * self.eps))

    # ---------------------------------------------------------------------------------- randomness
    # Drawn on the CPU (the generator's device) and moved: the same seed gives the same draws anywhere.

    def _randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, high, size, generator=self.generator).to(self.x.device)

    def _signs(self, size: tuple[int, ...]) -> torch.Tensor:
        return (self._randint(2, size) * 2 - 1).to(self.x.dtype)

    def _coins(self, size: tuple[int, ...]) -> torch.Tensor:
        return self._randint(2, size).bool()

    # ------------------------------------------------------------------------------------- search

    def search(self, queries: int, p_init: float) -> tuple[torch.Tensor, ...]:
        """``(x_adv, margin, fooled, steps, queries)`` per row after the initialisation and up to
        ``queries - 1`` proposals."""
        n = self.x.shape[0]
        current = self._init_linf() if self.threat.norm == "linf" else self._init_l2()
        current_margin, fooled = self.query(current, self.y)
        steps = torch.zeros(n, dtype=torch.long, device=self.x.device)
        for i in range(queries - 1):
            active = (~fooled).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            side_p = _window_share(p_init, i, queries)
            if self.threat.norm == "linf":
                proposal = self._propose_linf(active, current, side_p)
            else:
                proposal = self._propose_l2(active, current[active], side_p)
            new_margin, new_fooled = self.query(proposal, self.y[active])
            steps[active] += 1
            accept = new_fooled | (new_margin < current_margin[active])
            rows = active[accept]
            current[rows] = proposal[accept]
            current_margin[rows] = new_margin[accept]
            fooled[rows] = new_fooled[accept]
        return current, current_margin, fooled, steps, steps + 1

    # ---------------------------------------------------------------------------------- L-inf

    def _init_linf(self) -> torch.Tensor:
        n = self.x.shape[0]
        stripes = self._coins((n, self.channels, 1, self.width))
        low, high = self.faces
        return torch.where(stripes, high, low)

    def _linf_side(self, p: float) -> int:
        side = int(round(math.sqrt(p * self.height * self.width)))
        return max(min(side, min(self.height, self.width) - 1), 1)

    def _propose_linf(self, active: torch.Tensor, current: torch.Tensor, p: float) -> torch.Tensor:
        """The proposals of the rows ``active`` of ``current`` (the run's iterates): a random window of
        each set to the eps-box's faces with random signs per channel, the first of ``1 + _REDRAWS``
        draws of signs that changes the point (one pass of the ``square_linf_proposal`` op)."""
        n, side = active.numel(), self._linf_side(p)
        top = self._randint(self.height - side + 1, (n,))
        left = self._randint(self.width - side + 1, (n,))
        up = self._coins((n, 1 + _REDRAWS, self.channels))
        low, high = self.faces
        return ops.square_linf_proposal(current, low, high, active, top, left, side, up)[0]

    # ------------------------------------------------------------------------------------- L2

    def _init_l2(self) -> torch.Tensor:
        n, c, h, w = self.x.shape
        side = max(min(h, w) // 5, 1)
        top, left = max((h - 5 * side) // 2, 0), max((w - 5 * side) // 2, 0)
        rows, cols = (h - top) // side, (w - left) // side
        pulse = _pulse(side, self.x.dtype, self.x.device)
        flip = self._coins((n, 1, rows, cols, 1, 1))
        tiles = torch.where(flip, pulse.t(), pulse) * self._signs((n, c, rows, cols, 1, 1))
        delta = torch.zeros_like(self.x)
        delta[:, :, top : top + rows * side, left : left + cols * side] = (
            tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, rows * side, cols * side))
        return self._place_l2(self.x, self.eps, delta)

    def _place_l2(self, x: torch.Tensor, eps: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``x`` plus ``delta`` (in threat-model units) rescaled to norm ``eps``, clipped to the bounds."""
        norm = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return self.threat.clip(x + self.unit * eps * delta / (norm + _TINY))

    def _l2_side(self, p: float) -> int:
        side = max(int(round(math.sqrt(p * self.height * self.width))), 3)
        side += 1 - side % 2  # odd, so the pulse has a centre row
        return min(side, self.height, self.width)

    def _propose_l2(self, active: torch.Tensor, current: torch.Tensor, p: float) -> torch.Tensor:
        x, eps = self.x[active], self.eps[active]
        n, c = x.shape[:2]
        side = self._l2_side(p)
        delta = (current - x) / self.unit
        first = self._window(n, side).expand_as(delta)
        second = self._window(n, side).expand_as(delta)
        norm_all = delta.flatten(1).norm(dim=1)
        norm_windows = (delta * (first | second)).flatten(1).norm(dim=1)
        old = delta[first].reshape(n, c, side, side)
        old = old / (old.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + _TINY)
        pulse = _pulse(side, x.dtype, x.device)
        flip = self._coins((n, 1, 1, 1))
        new = torch.where(flip, pulse.t(), pulse) * self._signs((n, c, 1, 1)) + old
        # Each channel's window gets the mass of both windows plus its share of what the ball has left.
        mass = ((eps.reshape(-1) ** 2 - norm_all**2).clamp(min=0) / c + norm_windows**2).sqrt()
        new = new / (new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + _TINY) * mass.reshape(-1, 1, 1, 1)
        delta = delta.masked_fill(second, 0)
        delta = delta.masked_scatter(first, new)
        return self._place_l2(x, eps, delta)

    # ------------------------------------------------------------------------------------ windows

    def _window(self, n: int, side: int) -> torch.Tensor:
        """``[n, 1, H, W]`` bool: one ``side x side`` square per row at a uniformly random position."""
        top = self._randint(self.height - side + 1, (n,))
        left = self._randint(self.width - side + 1, (n,))
        rows = torch.arange(self.height, device=self.x.device)
        cols = torch.arange(self.width, device=self.x.device)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
        return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_share(p_init: float, iteration: int, queries: int) -> float:
    """The share of the image a window covers at ``iteration``: ``p_init`` halved after each of the
    paper's milestones, on the 10000-query scale."""
    on_scale = int(iteration / queries * _SCHEDULE_BUDGET)
    return p_init / 2 ** sum(on_scale > milestone for milestone in _HALVINGS)


def _rectangles(height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[height, width]``, unit L2 norm: concentric rectangles around the centre, the k-th (radius k in
    the max-norm) adding ``1 / (k + 1)^2``; a point at max-norm distance d from the centre sums the
    weights of every rectangle from d outwards."""
    ch, cw = height // 2, width // 2
    largest = max(ch, cw)
    weights = 1.0 / torch.arange(1, largest + 2, dtype=dtype, device=device) ** 2
    from_here_out = weights.flip(0).cumsum(0).flip(0)
    dh = (torch.arange(height, device=device) - ch).abs()
    dw = (torch.arange(width, device=device) - cw).abs()
    out = from_here_out[torch.maximum(dh[:, None], dw[None, :])]
    return out / out.norm()


def _pulse(side: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[side, side]``, unit L2 norm: the paper's L2 window perturbation, rectangles over the top half
    and minus rectangles over the bottom half."""
    half = side // 2
    out = torch.empty(side, side, dtype=dtype, device=device)
    if half:
        out[:half] = _rectangles(half, side, dtype, device)
    out[half:] = -_rectangles(side - half, side, dtype, device)
    return out / out.norm()


__all__ = ["SquareResult", "square"]
