"""Projected gradient descent (Madry et al., 2018) and FGSM / FGSM-RS on the fused attack-step ops."""

from __future__ import annotations

import warnings
from typing import Literal, overload

import torch

from .._params import Param
from .._validate import check_bool, check_int
from ._common import (
    AttackResult,
    FiniteWatch,
    LogitsSelector,
    LossFn,
    Model,
    Precision,
    check_batch,
    check_logits,
    check_model,
    check_selector,
    check_start,
    eval_mode,
    keep_better,
    outcome_at,
    per_sample_loss,
    resolve_amp,
    resolve_generator,
    resolve_loss,
    scaled_input_gradient,
    select_logits,
    succeeded,
)
from .threat import Bounds, ThreatModel


@overload
def pgd(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    norm: str = ..., random_start: bool = ..., restarts: int = ..., targeted: bool = ..., loss: str | LossFn = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ...,
    amp: torch.dtype | None = ..., cuda_graph: bool = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def pgd(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, steps: int = ..., alpha: Param | None = ...,
    norm: str = ..., random_start: bool = ..., restarts: int = ..., targeted: bool = ..., loss: str | LossFn = ...,
    bounds: Bounds = ..., scale: Param = ..., early_stop: bool = ..., logits: LogitsSelector = ...,
    seed: int | None = ..., generator: torch.Generator | None = ..., x_init: torch.Tensor | None = ...,
    amp: torch.dtype | None = ..., cuda_graph: bool = ..., return_result: Literal[True],
) -> AttackResult: ...
def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    steps: int = 10,
    alpha: Param | None = None,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    early_stop: bool = False,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | None = None,
    amp: torch.dtype | None = None,
    cuda_graph: bool = False,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    r"""Projected gradient ascent on the attack loss inside an L-inf or L2 ball.

    Each step (one fused kernel after the model's forward and input-gradient pass)::

        linf: x' <- clip_bounds( clip_[x-eps, x+eps]( x' + alpha * sign(grad) ) )
        l2:   x' <- clip_bounds( x + P_eps( x' - x + alpha * grad / ||grad|| ) )

    The model runs in eval mode and every submodule's mode is restored afterwards; parameter
    ``.grad`` is never written; ``x`` is never modified.

    Args:
        model: a callable (usually an ``nn.Module``) mapping a batch to logits, or to a tuple/dict
            holding them (see ``logits``).
        x: clean batch ``[B, C, *]`` inside ``bounds``.
        y: ``[B]`` true labels (untargeted) or target labels (``targeted=True``).
        eps: radius, a number or one per sample (``[B]``), in threat-model units (see ``scale``).
        steps: gradient steps per restart (>= 1).
        alpha: step size, number or ``[B]``; default ``2.5 * eps / steps`` (Madry et al.).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start each restart uniformly in the ball (the first restart starts at
            ``x_init`` instead, when given).
        restarts: independent runs; per sample the result of the most successful restart is kept
            (success first, then the higher loss).
        targeted: move towards class ``y`` instead of away from it.
        loss: ``"ce"`` (cross-entropy), ``"cw"`` (margin) or ``callable(logits, y) -> [B]`` to maximise.
        bounds: ``(lo, hi)`` of the input space, numbers or per-channel tensors ``[C]``; ``None`` for
            unbounded inputs. For inputs normalised *outside* the model use
            ``bounds=((0 - mean) / std, (1 - mean) / std)`` and ``scale=1 / std``.
        scale: per-channel size of one threat-model unit in input units (``1 / std`` for inputs
            normalised outside the model, so eps stays in pixel units); number or ``[C]``.
        early_stop: stop attacking a sample as soon as the attack succeeds on it (its fooling point
            is kept); later steps run the model only on the samples not yet fooled, and restarts
            only on samples no earlier restart fooled. Same success, far less work where most
            samples fall early (evaluations); ``steps`` in the result counts each sample's steps.
        logits: where the logits are in the model's output: an index, a key or a callable.
        seed, generator: source of the random starts (default: torch's global generator, so
            ``torch.manual_seed`` makes attacks reproducible).
        x_init: optional starting point of the first restart, same shape as ``x``.
        amp: ``torch.bfloat16`` or ``torch.float16`` runs every forward of the model under
            ``torch.autocast`` in that dtype; the attack state, the gradient and the step stay in
            ``x``'s dtype. float16 gradients are loss-scaled (the step only uses the gradient's sign
            or direction, so the scale cancels).
        cuda_graph: on CUDA, capture one step (forward, input gradient, fused step) in a CUDA graph
            after an eager first step and replay it for the other steps and restarts: no per-kernel
            launch cost. Needs static shapes and a model without host synchronisation in its forward;
            early stop then masks fooled samples instead of ending the loop. Capture that fails (or
            a CPU input) warns and runs the same steps eagerly.
        return_result: return an :class:`AttackResult` (per-sample success, loss, steps) instead of
            the adversarial batch.

    Returns:
        The adversarial batch (same shape, dtype, memory format as ``x``), or an
        :class:`AttackResult` with ``return_result=True``.

    Shape:
        x: ``[B, C, *]``; y: ``[B]``; eps, alpha: scalar or ``[B]``; bounds, scale: scalar or ``[C]``.
    """
    check_model(model)
    check_batch(x, y)
    steps = check_int(steps, "steps", 1)
    threat = ThreatModel.resolve(x, eps=eps, norm=norm, bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: 2.5 * e / steps)
    return run_pgd(
        model, x, y, threat, steps=steps, random_start=random_start, restarts=restarts, targeted=targeted, loss=loss,
        early_stop=early_stop, logits=logits, seed=seed, generator=generator, x_init=x_init, amp=amp,
        cuda_graph=cuda_graph, return_result=return_result,
    )


def run_pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    random_start: bool,
    restarts: int,
    targeted: bool,
    loss: str | LossFn,
    early_stop: bool,
    logits: LogitsSelector,
    seed: int | None,
    generator: torch.Generator | None,
    x_init: torch.Tensor | None,
    amp: torch.dtype | None,
    cuda_graph: bool,
    return_result: bool,
) -> torch.Tensor | AttackResult:
    """PGD's loop in ``threat`` (resolved, with its step size): what :func:`pgd`, :func:`bim` and
    :func:`fgsm` run once they have checked ``model``, ``x``, ``y`` and ``steps``. The remaining
    options are checked here."""
    restarts = check_int(restarts, "restarts", 1)
    random_start = check_bool(random_start, "random_start")
    early_stop = check_bool(early_stop, "early_stop")
    cuda_graph = check_bool(cuda_graph, "cuda_graph")
    return_result = check_bool(return_result, "return_result")
    loss_fn = resolve_loss(loss, targeted)
    logits = check_selector(logits)
    precision = resolve_amp(amp, x)
    generator = resolve_generator(seed, generator)
    x_init = check_start(x_init, x)
    x = x.detach()
    y = y.long()
    graph = _graph_if_possible(x) if cuda_graph else None

    # The loop's state lives in buffers allocated once and updated in place: the steps allocate
    # nothing but the model's own activations and gradient, and a CUDA graph can replay them.
    x_adv = torch.empty_like(x)
    taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if early_stop else None
    watch = FiniteWatch(x.device)
    loop = _StepLoop(
        model, x, y, x_adv, taken, active, threat=threat, loss_fn=loss_fn, logits=logits, targeted=targeted,
        precision=precision, watch=watch,
    )
    with eval_mode(model):
        best: AttackResult | None = None
        for r in range(restarts):
            if early_stop:
                assert active is not None
                # Later restarts only work on samples no restart has fooled yet.
                if best is None:
                    active.fill_(True)
                else:
                    torch.logical_not(best.success, out=active)
                    if not bool(active.any()):
                        break
            x_adv.copy_(x)
            if r == 0 and x_init is not None:
                x_adv.copy_(x_init.detach())
            elif random_start:
                threat.random_init_(x_adv, x, active=active, generator=generator)
            taken.zero_()
            if graph is not None:
                graph = loop.run_graphed(steps, graph)
            else:
                loop.run_eager(steps)
            # Before anything is returned: a NaN logit on the way voids every verdict.
            watch.check()
            if restarts == 1 and not return_result:
                return x_adv
            success, value = outcome_at(model, x_adv, y, loss_fn, logits, targeted, precision)
            current = AttackResult(x_adv.clone(), success, value, taken.clone(), torch.full_like(taken, r))
            best = current if best is None else keep_better(best, current)
    assert best is not None
    return best if return_result else best.x_adv


class _StepLoop:
    """PGD's K steps on preallocated state (``x_adv``, ``taken``, ``active``), run eagerly or replayed
    from a CUDA graph. One step is two phases: the forward (which also retires fooled samples under
    early stop) and the input-gradient backward plus the fused step.

    Under early stop the eager loop *compacts*: once some samples are fooled, each step gathers the
    still-active ones, runs the model on that smaller batch and scatters the result back, so fooled
    samples cost nothing (an evaluation where most samples fall in a step or two runs several times
    faster). A CUDA graph needs static shapes: there every step runs on the whole batch and the
    ``active`` mask alone freezes fooled samples."""

    def __init__(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        x_adv: torch.Tensor,
        taken: torch.Tensor,
        active: torch.Tensor | None,
        *,
        threat: ThreatModel,
        loss_fn: LossFn,
        logits: LogitsSelector,
        targeted: bool,
        precision: Precision,
        watch: FiniteWatch,
    ) -> None:
        self.model, self.x, self.y, self.x_adv, self.taken, self.active = model, x, y, x_adv, taken, active
        self.threat = threat
        self.loss_fn, self.logits, self.targeted, self.precision = loss_fn, logits, targeted, precision
        self.watch = watch
        self.logits_checked = False

    def forward(
        self, x_cur: torch.Tensor, y: torch.Tensor, *, capturing: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_req, loss, fooled)`` at ``x_cur``; the graph from ``x_req`` to ``loss`` is kept."""
        x_req = x_cur.detach().requires_grad_(True)
        with torch.enable_grad(), self.precision.autocast(cache_enabled=not capturing):
            z = select_logits(self.model(x_req), self.logits)
            if not self.logits_checked:
                check_logits(z, y)
                self.logits_checked = True
            value = per_sample_loss(self.loss_fn, z, y)
        # Recorded on the device (no synchronisation, capturable); raised on after the loop.
        self.watch.note(z, value)
        return x_req, value, succeeded(z.detach(), y, self.targeted)

    def full_step(self, *, capturing: bool = False) -> None:
        """One step on the whole batch, in place; fooled samples are masked (under early stop)."""
        x_req, value, fooled = self.forward(self.x_adv, self.y, capturing=capturing)
        if self.active is not None:
            self.active.logical_and_(~fooled)
        grad = scaled_input_gradient(value, x_req, self.precision)
        self.threat.step_(self.x_adv, grad.to(self.x_adv.dtype), self.x, active=self.active)
        self.taken.add_(1 if self.active is None else self.active)

    def compacted_step(self, rows: torch.Tensor) -> bool:
        """One step on the samples ``rows`` (the active ones); False once none of them is left."""
        assert self.active is not None
        y = self.y[rows]
        x_req, value, fooled = self.forward(self.x_adv[rows], y)
        still = ~fooled
        self.active[rows] = still
        if not bool(still.any()):
            return False
        grad = scaled_input_gradient(value, x_req, self.precision)
        moved = x_req.detach()
        self.threat.rows(rows).step_(moved, grad.to(moved.dtype), self.x[rows], active=still)
        self.x_adv[rows] = moved
        self.taken[rows] += still
        return True

    def run_eager(self, steps: int) -> None:
        for _ in range(steps):
            if self.active is None:
                self.full_step()
                continue
            rows = self.active.nonzero().squeeze(1)
            if rows.numel() == 0 or not self.compacted_step(rows):
                break

    def run_graphed(self, steps: int, graph: _Graph) -> _Graph | None:
        """Replay ``steps`` steps from ``graph``, capturing it first if needed (the first step then
        runs eagerly, as the capture's warm-up). Returns the graph to reuse for the next restart, or
        None after falling back to eager steps because capture failed."""
        if graph.cuda_graph is None:
            stream = torch.cuda.Stream(device=self.x.device)
            stream.wait_stream(torch.cuda.current_stream(self.x.device))
            with torch.cuda.stream(stream):
                # Warm-up on a side stream (lazy initialisation, cuDNN autotuning), as a real step.
                self.full_step()
            torch.cuda.current_stream(self.x.device).wait_stream(stream)
            steps -= 1
            if steps == 0:
                return graph
            try:
                captured = torch.cuda.CUDAGraph()
                with torch.cuda.graph(captured):
                    self.full_step(capturing=True)
            except RuntimeError as error:
                warnings.warn(
                    f"pgd(cuda_graph=True): the model's step could not be captured in a CUDA graph ({error}); "
                    "running eagerly. Typical causes: a host synchronisation (.item(), data-dependent "
                    "shapes) or CPU tensors in the model's forward.",
                    stacklevel=4,
                )
                self.run_eager(steps)
                return None
            graph.cuda_graph = captured
        for _ in range(steps):
            graph.cuda_graph.replay()
        return graph


class _Graph:
    """A CUDA graph of one PGD step, captured on the first restart and replayed by all of them."""

    cuda_graph: torch.cuda.CUDAGraph | None = None


def _graph_if_possible(x: torch.Tensor) -> _Graph | None:
    """A (not yet captured) graph holder when ``x`` is on a CUDA device that can capture, else None
    with a warning: ``cuda_graph=True`` is a speed request, and the eager loop computes the same."""
    if x.device.type != "cuda":
        reason = f"x is on {x.device.type}, and CUDA graphs need a CUDA device"
    elif torch.cuda.is_current_stream_capturing():
        reason = "a CUDA graph is already being captured on this stream"
    else:
        return _Graph()
    warnings.warn(f"pgd(cuda_graph=True): {reason}; running eagerly", stacklevel=3)
    return None


@overload
def fgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, random_start: bool = ...,
    alpha: Param | None = ..., targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ...,
    scale: Param = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., amp: torch.dtype | None = ..., return_result: Literal[False] = ...,
) -> torch.Tensor: ...
@overload
def fgsm(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, eps: Param, random_start: bool = ...,
    alpha: Param | None = ..., targeted: bool = ..., loss: str | LossFn = ..., bounds: Bounds = ...,
    scale: Param = ..., logits: LogitsSelector = ..., seed: int | None = ...,
    generator: torch.Generator | None = ..., amp: torch.dtype | None = ..., return_result: Literal[True],
) -> AttackResult: ...
def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: Param,
    random_start: bool = False,
    alpha: Param | None = None,
    targeted: bool = False,
    loss: str | LossFn = "ce",
    bounds: Bounds = (0.0, 1.0),
    scale: Param = 1.0,
    logits: LogitsSelector = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    amp: torch.dtype | None = None,
    return_result: bool = False,
) -> torch.Tensor | AttackResult:
    """Fast gradient sign method (Goodfellow et al., 2015), and FGSM-RS (Wong et al., 2020).

    Without random start: ``x' = clip_bounds(x + eps * sign(grad))`` (``alpha`` defaults to ``eps``).
    With ``random_start=True`` (the step of "fast is better than free" adversarial training): start
    uniformly in the eps-ball, step ``alpha`` (default ``1.25 * eps``), project back onto the ball.

    Args: as :func:`pgd`, with one L-inf step.

    Returns:
        The adversarial batch, or an :class:`AttackResult` with ``return_result=True``.
    """
    check_model(model)
    check_batch(x, y)
    random_start = check_bool(random_start, "random_start")
    threat = ThreatModel.resolve(x, eps=eps, norm="linf", bounds=bounds, scale=scale, alpha=alpha,
                                 default_alpha=lambda e: e * (1.25 if random_start else 1.0))
    return run_pgd(
        model, x, y, threat, steps=1, random_start=random_start, restarts=1, targeted=targeted, loss=loss,
        early_stop=False, logits=logits, seed=seed, generator=generator, x_init=None, amp=amp, cuda_graph=False,
        return_result=return_result,
    )


__all__ = ["fgsm", "pgd", "run_pgd"]
