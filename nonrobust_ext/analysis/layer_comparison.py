r"""Layer-by-layer comparison of two models on the same inputs (e.g. pretrained vs fine-tuned).

The study's evidence that a fine-tuned model inherits its pretrained source's features is the similarity of
corresponding layers of the two models on the same inputs:

- :func:`layer_similarity`: one similarity per pair of layers, with any measure of :mod:`.cka` or :mod:`.cca`,
  from the activations of the whole data set held in memory;
- :func:`minibatch_cka`: the full ``[La, Lb]`` matrix of minibatch CKA between every layer of one model and every
  layer of the other, one batch of activations at a time (data sets of any size);
- :func:`plot_layer_similarity`: their plots.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import torch

from .._progress import progress_bar
from .._validate import check_bool, check_choice, check_real
from ..attacks._common import eval_mode
from ._inputs import InputData, check_batch_size, check_module, input_batches, resolve_device
from .activations import Pool, _collect, _layer_list, _LayerRecorder
from .cca import _check_keep, cca, pwcca, svcca
from .cka import CKAMatrix, MinibatchCKA, linear_cka

__all__ = ["layer_similarity", "minibatch_cka", "plot_layer_similarity"]

_METHODS = ("cka", "svcca", "pwcca", "cca")


def minibatch_cka(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    data: InputData,
    layers_a: Sequence[str],
    layers_b: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    pool: Pool = "mean",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> CKAMatrix:
    r"""Layer-by-layer minibatch CKA between two models on the same inputs (Nguyen et al. 2021).

    Both models see each batch; the outputs of ``layers_a`` (model A) and ``layers_b`` (model B) are pooled as in
    :func:`~nonrobust_ext.analysis.collect_activations` and fed to :class:`MinibatchCKA`, so only one batch of
    activations is held at a time::

        CKA_mb(i, j) = sum_t HSIC_1(K_i^t, L_j^t) / sqrt( sum_t HSIC_1(K_i^t, K_i^t) sum_t HSIC_1(L_j^t, L_j^t) )

    Models run in eval mode under no_grad (training flags restored, hooks removed afterwards). ``model_b`` may be
    ``model_a`` (self-similarity; one forward pass per batch).

    Args:
        model_a, model_b: the two networks (e.g. pretrained and fine-tuned).
        data: input tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y)`` batches.
        layers_a: submodule names of model A (rows).
        layers_b: submodule names of model B (columns); default ``layers_a``.
        batch_size: minibatch size when ``data`` is a tensor (at least 4; the last batch is skipped if smaller).
        pool: how layer outputs become ``[m, D]`` (see ``collect_activations``).
        device: where both models run (inputs moved there); default each model's own device.
        progress: show a progress bar.

    Returns:
        A :class:`CKAMatrix` (``matrix [len(layers_a), len(layers_b)]``).

    Shape:
        each layer's pooled output: ``[m, D_layer]``.
    """
    batch_size = check_batch_size(batch_size)
    if isinstance(data, torch.Tensor) and batch_size < 4:
        raise ValueError(f"batch_size must be at least 4 for the unbiased HSIC, got {batch_size}")
    check_bool(progress, "progress")
    check_module(model_a, "model_a")
    check_module(model_b, "model_b")
    layers_a = _layer_list(layers_a, "layers_a")
    layers_b = list(layers_a) if layers_b is None else _layer_list(layers_b, "layers_b")
    acc = MinibatchCKA(layers_a, layers_b)
    same = model_b is model_a
    if same:
        rec_a = _LayerRecorder(model_a, list(dict.fromkeys([*layers_a, *layers_b])), pool, "layers_a/layers_b")
        rec_b = None
    else:
        rec_a = _LayerRecorder(model_a, layers_a, pool, "layers_a")
        rec_b = _LayerRecorder(model_b, layers_b, pool, "layers_b")
    dev_a = resolve_device(model_a, device)
    dev_b = resolve_device(model_b, device, default=dev_a)
    with rec_a, eval_mode(model_a), torch.no_grad():
        if rec_b is None:
            for xb in progress_bar(input_batches(data, batch_size), enabled=progress, description="minibatch CKA"):
                out = rec_a.run(xb.to(dev_a))
                acc.update(out, out)
        else:
            with rec_b, eval_mode(model_b):
                for xb in progress_bar(input_batches(data, batch_size), enabled=progress, description="minibatch CKA"):
                    out_a = rec_a.run(xb.to(dev_a))
                    out_b = rec_b.run(xb.to(dev_b))
                    acc.update(out_a, {k: v.to(dev_a) for k, v in out_b.items()})
    return acc.result()



def layer_similarity(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    data: InputData,
    layers: Sequence[str],
    *,
    method: str = "cka",
    pool: Pool = "mean",
    layers_b: Sequence[str] | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    debiased: bool = False,
    keep: float | int = 0.99,
    epsilon: float = 1e-6,
    progress: bool = False,
) -> dict[str, float]:
    r"""Similarity of corresponding layers of two models on the same inputs (e.g. pretrained vs fine-tuned).

    For each ``i``: ``sim(acts_a[layers[i]], acts_b[layers_b[i]])`` with the activations of
    :func:`~nonrobust_ext.analysis.collect_activations` (all N inputs held in memory, on the CPU) and ``sim`` one of::

        "cka"    linear_cka(debiased=debiased)
        "svcca"  svcca(keep=keep, epsilon=epsilon)
        "pwcca"  pwcca(acts_a, acts_b, epsilon=epsilon)     (weights from model A's layer)
        "cca"    mean canonical correlation, cca(epsilon=epsilon).mean

    For data sets too large to hold, use :func:`minibatch_cka`.

    Args:
        model_a, model_b: the two networks (``model_b`` may be ``model_a``).
        data: input tensor ``[N, ...]`` or an iterable of ``x`` / ``(x, y)`` batches (iterated once per model).
        layers: submodule names of model A.
        method: ``"cka"``, ``"svcca"``, ``"pwcca"`` or ``"cca"``.
        pool: how layer outputs become ``[N, D]`` (see ``collect_activations``).
        layers_b: submodule names of model B, paired with ``layers`` in order; default ``layers``.
        batch_size, device, progress: as ``collect_activations``.
        debiased, keep, epsilon: options of the measure (see above).

    Returns:
        ``{layers[i]: similarity}`` in order.

    Shape:
        each pooled layer output: ``[N, D_layer]``.
    """
    check_choice(method, "method", _METHODS)
    check_module(model_a, "model_a")
    check_module(model_b, "model_b")
    # The measure's options are checked before any activation is collected (that is the expensive part).
    debiased = check_bool(debiased, "debiased")
    keep = _check_keep(keep)
    epsilon = check_real(epsilon, "epsilon", low=0.0)
    layers = _layer_list(layers, "layers")
    layers_b = list(layers) if layers_b is None else _layer_list(layers_b, "layers_b")
    if len(layers_b) != len(layers):
        raise ValueError(f"layers_b must pair with layers: got {len(layers_b)} names for {len(layers)}")
    if model_b is not model_a and isinstance(data, Iterator):
        raise TypeError(
            "data must be a tensor or a re-iterable collection (e.g. a DataLoader), not a one-shot iterator: "
            "it is read once per model"
        )

    kw: dict[str, Any] = {"pool": pool, "batch_size": batch_size, "device": device, "out_device": "cpu",
                          "progress": progress, "data_name": "data"}
    if model_b is model_a:
        acts_a = acts_b = _collect(model_a, data, list(dict.fromkeys([*layers, *layers_b])), model_name="model_a",
                                   layers_name="layers/layers_b", **kw)
    else:
        acts_a = _collect(model_a, data, layers, model_name="model_a", layers_name="layers", **kw)
        acts_b = _collect(model_b, data, layers_b, model_name="model_b", layers_name="layers_b", **kw)
    result: dict[str, float] = {}
    for name_a, name_b in zip(layers, layers_b, strict=True):
        xa, xb = acts_a[name_a], acts_b[name_b]
        if xa.ndim != 2 or xb.ndim != 2:
            xa, xb = xa.reshape(xa.shape[0], -1), xb.reshape(xb.shape[0], -1)
        if method == "cka":
            result[name_a] = linear_cka(xa, xb, debiased=debiased)
        elif method == "svcca":
            result[name_a] = svcca(xa, xb, keep=keep, epsilon=epsilon)
        elif method == "pwcca":
            result[name_a] = pwcca(xa, xb, epsilon=epsilon)
        else:
            result[name_a] = cca(xa, xb, epsilon=epsilon).mean
    return result


# ------------------------------------------------------------------------------------------------------ plots

PlotInput = Union[Mapping[str, float], Mapping[str, Mapping[str, float]], CKAMatrix]


def plot_layer_similarity(
    result: PlotInput,
    path: str | Path,
    *,
    title: str | None = None,
    ylabel: str = "similarity",
) -> Path:
    """Save a plot of layer similarities as an image (needs matplotlib: ``pip install matplotlib``).

    - ``{layer: value}`` (from :func:`layer_similarity`): one curve over the layers;
    - ``{series: {layer: value}}``: one curve per series (e.g. "fine-tuned vs pretrained" and
      "standard vs pretrained"), with a legend;
    - a :class:`CKAMatrix` (from :func:`minibatch_cka`): a heat map.

    Args:
        result: what to plot (see above).
        path: output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``); parent folders are
            created.
        title: figure title.
        ylabel: y-axis label of the curves.

    Returns:
        The path written.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "plot_layer_similarity needs matplotlib: pip install matplotlib (or the plot extra: "
            "pip install 'nonrobust_ext[plot]')"
        ) from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(result, CKAMatrix):
        la, lb = len(result.layers_a), len(result.layers_b)
        fig = Figure(figsize=(1.0 + 0.5 * lb + 1.5, 1.0 + 0.5 * la + 1.0), layout="constrained")
        ax = fig.add_subplot()
        im = ax.imshow(result.matrix.cpu().numpy(), vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
        ax.set_xticks(range(lb), result.layers_b, rotation=60, ha="right")
        ax.set_yticks(range(la), result.layers_a)
        ax.set_xlabel("model B layer")
        ax.set_ylabel("model A layer")
        fig.colorbar(im, ax=ax, label="CKA")
    else:
        if not isinstance(result, Mapping) or not result:
            raise TypeError(
                "result must be a non-empty {layer: value} dict, a {series: {layer: value}} dict or a CKAMatrix"
            )
        first = next(iter(result.values()))
        series = dict(result) if isinstance(first, Mapping) else {"": result}
        layers = list(dict.fromkeys(name for s in series.values() for name in s))
        fig = Figure(figsize=(max(4.0, 0.45 * len(layers) + 2.0), 3.6), layout="constrained")
        ax = fig.add_subplot()
        pos = {name: i for i, name in enumerate(layers)}
        for label, values in series.items():
            xs = [pos[name] for name in values]
            ax.plot(xs, [float(v) for v in values.values()], marker="o", label=label or None)
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        if len(series) > 1 or next(iter(series)):
            ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=120)
    return path
