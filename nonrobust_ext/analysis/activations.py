"""Intermediate activations of a model, recorded with forward hooks on named submodules.

The representation-similarity analyses (:mod:`nonrobust_ext.analysis.similarity`) compare what two models
compute at chosen layers on the same inputs; this module gets those layer outputs as ``[N, D]`` matrices
(one row per input), pooling spatial maps so that layers of any shape can be compared.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_choice
from ..attacks._common import eval_mode
from ._inputs import InputData, check_batch_size, check_device, check_module, input_batches, resolve_device

#: How a layer's output becomes one row per input: ``"mean"`` (average over every dimension after the channel
#: dimension 1, e.g. H and W of a ``[B, C, H, W]`` map), ``"flatten"`` (``[B, C*H*W]``), ``"none"`` (kept as is),
#: or a callable applied to the module's raw output (whatever its type) that returns a ``[B, ...]`` tensor.
Pool = Union[str, Callable[[Any], torch.Tensor]]

_POOLS = ("mean", "flatten", "none")


def _check_pool(pool: object) -> None:
    if callable(pool):
        return
    if not isinstance(pool, str):
        raise TypeError(f"pool must be one of {_POOLS} or a callable, got {type(pool).__name__} {pool!r}")
    check_choice(pool, "pool", _POOLS)


def _layer_list(layers: object, arg: str) -> list[str]:
    """One submodule name or a list of them, as a list (the names themselves are checked against the model)."""
    if isinstance(layers, str):
        return [layers]
    if isinstance(layers, (bytes, Mapping)) or not isinstance(layers, Sequence):
        raise TypeError(f"{arg} must be a submodule name or a list of them, got {type(layers).__name__}")
    return list(layers)


def _apply_pool(name: str, output: Any, pool: Pool) -> torch.Tensor:
    """One layer output pooled to ``[B, ...]`` (``[B, D]`` for mean/flatten), detached."""
    if callable(pool):
        out = pool(output)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"pool callable returned a {type(out).__name__} for layer {name!r}, expected a tensor")
        return out.detach()
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"layer {name!r} returned a {type(output).__name__}, not a tensor: pass pool=<callable> that picks "
            "and pools the tensor to compare (e.g. pool=lambda out: out[0].mean(1))"
        )
    out = output.detach()
    if out.ndim == 0:
        raise ValueError(f"layer {name!r} returned a scalar; a batch [B, ...] is needed")
    if pool == "mean":
        return out.flatten(2).mean(2) if out.ndim > 2 else out.reshape(out.shape[0], -1)
    if pool == "flatten":
        return out.reshape(out.shape[0], -1)
    return out


def _check_layers(model: torch.nn.Module, layers: Sequence[str], arg: str = "layers") -> dict[str, torch.nn.Module]:
    """The named submodules, with a clear error (and close matches) for unknown names."""
    check_module(model)
    layers = _layer_list(layers, arg)
    if not layers:
        raise ValueError(f"{arg} is empty: name at least one submodule (see model.named_modules())")
    dupes = sorted({n for n in layers if layers.count(n) > 1})
    if dupes:
        raise ValueError(f"{arg} has duplicate names: {dupes}")
    modules = dict(model.named_modules())
    found: dict[str, torch.nn.Module] = {}
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"{arg} must hold submodule names (str), got {type(name).__name__}")
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ""
            some = [n for n in modules if n][:20]
            raise ValueError(
                f"{arg}: {type(model).__name__} has no submodule {name!r}{hint} "
                f"(some names: {some}{' ...' if len(modules) > 21 else ''}; list them with model.named_modules())"
            )
        found[name] = modules[name]
    return found


class _LayerRecorder:
    """Forward hooks that store each named layer's pooled output for one forward pass at a time.

    Use as a context manager (the hooks are removed on exit, error or not) and call :meth:`run` per batch.
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[str], pool: Pool, arg: str = "layers") -> None:
        _check_pool(pool)
        self.model = model
        self.modules = _check_layers(model, layers, arg)
        self.pool = pool
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            if name in self.outputs:
                # A module called twice per forward (e.g. one ReLU shared inside a ResNet block) has no single
                # output to compare; refuse rather than silently keep one of the calls.
                raise ValueError(
                    f"layer {name!r} ran more than once in one forward pass (a shared module); "
                    "pick a module that runs once, e.g. the enclosing block"
                )
            self.outputs[name] = _apply_pool(name, output, self.pool)

        return hook

    def __enter__(self) -> _LayerRecorder:
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward ``x`` through the model; the pooled output of every layer, ``[B, ...]`` each."""
        self.outputs = {}
        try:
            self.model(x)
            outputs = self.outputs
        finally:
            self.outputs = {}
        missing = [n for n in self.modules if n not in outputs]
        if missing:
            raise ValueError(f"layers {missing} did not run in the forward pass of {type(self.model).__name__}")
        for name, out in outputs.items():
            if out.ndim == 0 or out.shape[0] != x.shape[0]:
                raise ValueError(
                    f"layer {name!r} gave shape {tuple(out.shape)} for a batch of {x.shape[0]}: the first "
                    "dimension must be the batch (pass pool=<callable> to rearrange it)"
                )
        return outputs


def collect_activations(
    model: torch.nn.Module,
    x_or_batches: InputData,
    layers: Sequence[str],
    *,
    pool: Pool = "mean",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = "cpu",
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """The outputs of named submodules on a data set, one row per input.

    A forward hook on each ``dict(model.named_modules())[name]`` records its output; spatial maps are pooled
    per ``pool``::

        mean:    [B, C, H, W] -> [B, C]        (average over every dimension after dim 1)
        flatten: [B, C, H, W] -> [B, C*H*W]
        none:    kept as is
        f:       f(output) -> [B, ...]         (any module output type, e.g. tuples, token maps)

    The model runs in eval mode under ``torch.no_grad()``; every submodule's training flag is restored
    afterwards, and the hooks are removed whatever happens.

    Args:
        model: the network.
        x_or_batches: an input tensor ``[N, ...]`` (split into ``batch_size`` chunks) or an iterable of
            batches, each a tensor or an ``(x, y, ...)`` tuple whose first item is the input.
        layers: submodule names as in ``model.named_modules()`` (``""`` is the model itself).
        pool: ``"mean"``, ``"flatten"``, ``"none"`` or a callable (see above).
        batch_size: batch size when a tensor is given.
        device: where the forward passes run (inputs are moved there); default: the model's device. The
            model itself is not moved.
        out_device: where the activations are gathered (default the CPU, which keeps accelerator memory free);
            ``None`` keeps them where they were computed.
        progress: show a progress bar (tqdm).

    Returns:
        ``{name: activations}`` in the order of ``layers``.

    Shape:
        activations: ``[N, D]`` for ``pool="mean"|"flatten"`` (``D = C`` or ``C*H*W``); ``[N, *]`` otherwise.

    Raises:
        ValueError: unknown layer name (with close matches), a layer that did not run or ran twice per forward,
            an unknown ``pool``, no data.
    """
    return _collect(model, x_or_batches, layers, pool=pool, batch_size=batch_size, device=device,
                    out_device=out_device, progress=progress)


def _collect(
    model: torch.nn.Module,
    data: InputData,
    layers: Sequence[str],
    *,
    pool: Pool,
    batch_size: int,
    device: torch.device | str | None,
    out_device: torch.device | str | None,
    progress: bool,
    data_name: str = "x_or_batches",
    model_name: str = "model",
    layers_name: str = "layers",
) -> dict[str, torch.Tensor]:
    """:func:`collect_activations`, with the names its caller gave the data, the model and the layers (so that
    an error raised for :func:`~nonrobust_ext.analysis.layer_similarity` names *its* arguments)."""
    check_module(model, model_name)
    batch_size = check_batch_size(batch_size)
    check_bool(progress, "progress")
    recorder = _LayerRecorder(model, layers, pool, layers_name)
    run_device = resolve_device(model, device)
    gather_device = None if out_device is None else check_device(out_device, "out_device")
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in recorder.modules}
    batches = input_batches(data, batch_size, data_name)  # raises when it holds no data
    with recorder, eval_mode(model), torch.no_grad():
        for xb in progress_bar(batches, enabled=progress, description="activations"):
            outputs = recorder.run(xb.to(run_device, non_blocking=True))
            for name, out in outputs.items():
                chunks[name].append(out if gather_device is None else out.to(gather_device))
    return {name: torch.cat(parts) for name, parts in chunks.items()}
