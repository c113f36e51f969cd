r"""Frequency analysis: what a model relies on, and where its adversarial perturbations live, in the
spatial-frequency domain (Wang et al., 2020, "High-frequency component helps explain the generalization
of convolutional neural networks"; Yin et al., 2019, "A Fourier perspective on model robustness").

Everything here works on the *centred* 2-D spectrum of each image channel (``fftshift(fft2(x))``,
zero frequency in the middle, at index ``(H // 2, W // 2)``); the distance of a frequency from the
centre, in index units, is its *radius*. A circular mask of radius ``r`` splits an image into its
low-frequency part (``radius <= r``) and its high-frequency part (the rest); the mask is symmetric
under ``k -> -k``, so both parts are real images and ``low + high == x``.

Non-robust features are often high-frequency: a model that leans on them keeps much of its accuracy on
the high-pass part of its inputs, its adversarial perturbations carry their power at high radii, and
perturbations restricted to high frequencies hurt it most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._progress import progress_bar
from .._validate import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_optional_real,
    check_real,
    check_reals,
)
from ..attacks._common import LogitsSelector, eval_mode, input_gradient, resolve_loss
from ._inputs import (
    AttackFn,
    Data,
    attack_name,
    check_bounds,
    check_device,
    check_images,
    check_labels,
    check_model,
    labelled_batches,
    logits_of,
    pyplot_figure,
    resolve_attack,
    resolve_device,
    run_attack,
)


def _check_spatial(x: object, name: str) -> torch.Tensor:
    """Finite floating-point images ``[..., H, W]`` holding at least one pixel."""
    x = check_images(x, name)
    if x.numel() == 0:
        raise ValueError(f"{name} holds no images (shape {tuple(x.shape)}): nothing to compute over")
    return x


def radius_grid(height: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Distance of every frequency of a centred ``[height, width]`` spectrum from the zero frequency.

    Shape:
        ``[height, width]``, float32.
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    device = None if device is None else check_device(device)
    fy = torch.arange(height, device=device, dtype=torch.float32) - height // 2
    fx = torch.arange(width, device=device, dtype=torch.float32) - width // 2
    return (fy[:, None].square() + fx[None, :].square()).sqrt()


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _low_pass(x: torch.Tensor, radius: float) -> torch.Tensor:
    xc = x.to(_compute_dtype(x))
    spectrum = torch.fft.fftshift(torch.fft.fft2(xc), dim=(-2, -1))
    mask = radius_grid(x.shape[-2], x.shape[-1], device=x.device) <= radius
    low = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))).real
    return low.to(x.dtype)


def _band(x: torch.Tensor, radius: float, band: str) -> torch.Tensor:
    low = _low_pass(x, radius)
    return low if band == "low" else x - low


def frequency_decomposition(x: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Split images into their low- and high-frequency parts with a circular mask in the centred spectrum::

        low  = ifft2( ifftshift( M_r * fftshift( fft2(x) ) ) ),   M_r(k) = [ |k| <= r ]
        high = x - low

    per image and channel (the last two dimensions). ``radius = 0`` keeps the zero frequency only
    (``low`` is the per-channel mean); a radius at least the corner distance
    ``sqrt((H/2)^2 + (W/2)^2)`` keeps everything (``high == 0``).

    Args:
        x: images ``[..., H, W]`` (e.g. ``[B, C, H, W]``), floating point.
        radius: the cut-off radius in frequency-index units (>= 0).

    Returns:
        ``(low, high)``, each shaped and typed like ``x`` (computed in float32, float64 for float64).
    """
    _check_spatial(x, "x")
    radius = check_real(radius, "radius", low=0.0)
    low = _low_pass(x, radius)
    return low, x - low


def _accuracy_counts(model: Any, x: torch.Tensor, y: torch.Tensor, logits: LogitsSelector) -> int:
    return int((logits_of(model, x, logits, y).argmax(1) == y).sum())


def accuracy_by_frequency(
    model: torch.nn.Module,
    data: Data,
    radii: Sequence[float],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy of ``model`` on the low- and on the high-frequency part of its inputs, per radius.

    The parts of :func:`frequency_decomposition` are fed to the model as they are (not clipped to
    the image range: a high-pass image is centred on 0).

    Args:
        model: the classifier; eval mode, modes restored.
        data: a ``TensorData``, a pair ``(x, y)`` or an iterable of batches.
        radii: cut-off radii (each >= 0).
        batch_size, device, logits, progress: as :func:`nonrobust_ext.robust_accuracy`.

    Returns:
        ``{"radii": [...], "clean_accuracy": float, "low_accuracy": [...], "high_accuracy": [...],
        "num_samples": int}``.
    """
    check_model(model)
    radii_list = list(check_reals(radii, "radii", low=0.0))
    check_bool(progress, "progress")
    dev = resolve_device(model, device)
    n = clean = 0
    low = [0] * len(radii_list)
    high = [0] * len(radii_list)
    with eval_mode(model):
        for x, y in progress_bar(labelled_batches(data, batch_size), enabled=progress,
                                 description="accuracy by frequency"):
            x, y = x.to(dev), y.to(dev)
            n += len(y)
            clean += _accuracy_counts(model, x, y, logits)
            for k, r in enumerate(radii_list):
                lo, hi = frequency_decomposition(x, r)
                low[k] += _accuracy_counts(model, lo, y, logits)
                high[k] += _accuracy_counts(model, hi, y, logits)
    # n >= 1: labelled_batches raises for data without samples.
    return {
        "radii": radii_list,
        "clean_accuracy": clean / n,
        "low_accuracy": [c / n for c in low],
        "high_accuracy": [c / n for c in high],
        "num_samples": n,
    }


def _ring_index(height: int, width: int, device: torch.device) -> torch.Tensor:
    return radius_grid(height, width, device=device).round().long()


def _radial_average(power: torch.Tensor) -> torch.Tensor:
    """Mean of a centred ``[H, W]`` power map over rings of integer radius 0, 1, ..., R - 1."""
    rings = _ring_index(power.shape[-2], power.shape[-1], power.device).flatten()
    sums = torch.bincount(rings, weights=power.flatten().double())
    counts = torch.bincount(rings).double()
    return (sums / counts.clamp_min(1)).float().cpu()


def _power_map(delta: torch.Tensor) -> torch.Tensor:
    """Sum over all leading dimensions of the centred, orthonormal power spectrum: ``[H, W]`` float64."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(delta.double(), norm="ortho"), dim=(-2, -1))
    return spectrum.abs().square().reshape(-1, *delta.shape[-2:]).sum(0)


def perturbation_spectrum(x: torch.Tensor, x_adv: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
    r"""Radially averaged power spectrum of the perturbations ``delta = x_adv - x``.

    ``P(k) = |fftshift(fft2(delta))(k)|^2`` (orthonormal FFT, so ``sum_k P(k) = ||delta||^2``), averaged
    over the batch and channels, then over the ring of frequencies with ``round(|k|) = r`` for each
    integer radius ``r = 0 .. R - 1`` (``R - 1`` the rounded corner distance).

    Args:
        x: clean images ``[..., H, W]``.
        x_adv: perturbed images, same shape.
        normalize: divide by the sum over radii, so spectra of perturbations of different sizes compare
            by shape.

    Returns:
        ``[R]`` float32 on the CPU.
    """
    _check_spatial(x, "x")
    check_images(x_adv, "x_adv")
    normalize = check_bool(normalize, "normalize")
    if x.shape != x_adv.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    delta = x_adv.detach() - x.detach()
    batch = delta.numel() // (delta.shape[-2] * delta.shape[-1])  # images x channels, >= 1
    spectrum = _radial_average(_power_map(delta) / batch)
    return _normalise(spectrum) if normalize else spectrum


def _normalise(spectrum: torch.Tensor) -> torch.Tensor:
    total = float(spectrum.sum())
    return spectrum / total if total > 0 else spectrum


def adversarial_spectrum(
    model: torch.nn.Module,
    data: Data,
    *,
    eps: float,
    attack: str | AttackFn = "pgd",
    normalize: bool = False,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
    **attack_kwargs: Any,
) -> torch.Tensor:
    """:func:`perturbation_spectrum` of ``model``'s adversarial perturbations over a whole data set
    (every sample attacked with ``attack(model, x, y, eps=eps, **attack_kwargs)``).

    Returns:
        ``[R]`` float32 on the CPU (normalised to sum 1 with ``normalize``).
    """
    check_model(model)
    eps = check_real(eps, "eps", low=0.0)
    normalize = check_bool(normalize, "normalize")
    check_bool(progress, "progress")
    attack_fn, kwargs = resolve_attack(attack, logits, attack_kwargs)
    dev = resolve_device(model, device)
    power: torch.Tensor | None = None
    count = 0
    with eval_mode(model):
        batches = progress_bar(labelled_batches(data, batch_size), enabled=progress,
                               description=f"spectrum of {attack_name(attack)}")
        for x, y in batches:
            x, y = x.to(dev), y.to(dev)
            if x.dim() < 3:
                raise ValueError(f"data images must be [N, ..., H, W] with at least 3 dimensions, got "
                                 f"{tuple(x.shape)}")
            x_adv = run_attack(attack_fn, model, x, y, eps, kwargs)
            p = _power_map(x_adv - x)
            power = p if power is None else power + p
            count += x.numel() // (x.shape[-2] * x.shape[-1])
    assert power is not None and count > 0  # labelled_batches raised for data without samples
    spectrum = _radial_average(power / count)
    return _normalise(spectrum) if normalize else spectrum


def _per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    flat = t.flatten(1)
    value = flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)
    return value.view(-1, *([1] * (t.dim() - 1)))


@dataclasses.dataclass(frozen=True)
class _BandSettings:
    eps: float
    radius: float
    band: str
    method: str
    norm: str
    steps: int
    alpha: float
    lo: float
    hi: float


def _band_settings(eps: Any, radius: Any, band: Any, method: Any, norm: Any, steps: Any, alpha: Any, seed: Any,
                   bounds: Any) -> _BandSettings:
    eps = check_real(eps, "eps", low=0.0)
    radius = check_real(radius, "radius", low=0.0)
    check_choice(band, "band", ("low", "high"))
    check_choice(method, "method", ("pgd", "noise"))
    check_choice(norm, "norm", ("linf", "l2"))
    steps = check_int(steps, "steps", 1)
    alpha = 2.5 * eps / steps if alpha is None else check_optional_real(alpha, "alpha", low=0.0, low_inclusive=False)
    check_int(seed, "seed")
    lo, hi = check_bounds(bounds)
    return _BandSettings(eps, radius, band, method, norm, steps, alpha, lo, hi)


def _band_attack(model: Any, x: torch.Tensor, y: torch.Tensor, s: _BandSettings, seed: int,
                 logits: LogitsSelector) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + delta clipped to the bounds, still-correct mask)``: correct at every iterate (PGD) or at
    the noisy input (noise). The model is already in eval mode."""
    if s.eps == 0:
        return x, logits_of(model, x, logits, y).argmax(1) == y
    if s.method == "noise":
        g = torch.Generator().manual_seed(seed)
        noise = _band(torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype), s.radius, s.band)
        x_adv = (x + noise * (s.eps / _per_sample_norm(noise, s.norm).clamp_min(1e-12))).clamp(s.lo, s.hi)
        return x_adv, logits_of(model, x_adv, logits, y).argmax(1) == y
    loss_fn = resolve_loss("ce", targeted=False)
    delta = torch.zeros_like(x)
    ok = torch.ones_like(y, dtype=torch.bool)
    for step in range(s.steps):
        # The first forward checks the logits' shape and the labels' range; NaN logits are refused at every one.
        grad, z, _ = input_gradient(model, (x + delta).clamp(s.lo, s.hi), y, loss_fn, logits, check=step == 0)
        check_finite(z, "the model's logits")
        ok &= z.argmax(1) == y
        g_b = _band(grad, s.radius, s.band)
        if s.norm == "l2":
            step = g_b / _per_sample_norm(g_b, "l2").clamp_min(1e-12)
        else:
            step = _band(g_b.sign(), s.radius, s.band)
        delta = delta + s.alpha * step
        delta = delta * (s.eps / _per_sample_norm(delta, s.norm).clamp_min(1e-12)).clamp(max=1.0)
    x_adv = (x + delta).clamp(s.lo, s.hi)
    ok &= logits_of(model, x_adv, logits).argmax(1) == y
    return x_adv.detach(), ok


def band_limited_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    radius: float,
    band: str,
    method: str = "pgd",
    norm: str = "linf",
    steps: int = 10,
    alpha: float | None = None,
    seed: int = 0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    logits: LogitsSelector = None,
) -> torch.Tensor:
    r"""A perturbation of ``x`` confined to the low or the high spatial frequencies.

    The perturbation ``delta`` always lies in the band (``band="low"``: radii ``<= radius``;
    ``"high"``: radii ``> radius``) and within ``||delta||_norm <= eps``; the model sees
    ``clip_bounds(x + delta)`` (the clip can leak a little power out of the band at saturated pixels;
    pass ``bounds=None`` to keep the perturbation exactly in band).

    - ``method="pgd"``: band-limited PGD from ``delta = 0``: each of ``steps`` steps filters the input
      gradient ``g`` of the cross-entropy to the band, ``g_b = band(g)``, and moves
      ``delta <- delta + alpha * s`` with ``s = g_b / ||g_b||_2`` (L2) or ``s = band(sign(g_b))`` (L-inf:
      the steepest L-inf ascent direction brought back into the band, still an ascent direction
      since ``<band(sign(g_b)), g> = ||g_b||_1``); ``delta`` is then brought back into the ball by
      *rescaling* (``delta <- delta * min(1, eps / ||delta||_norm)``), which keeps it in the band (a
      clip would not). In L2 this is exact projected gradient ascent on the band subspace; in L-inf the
      rescaling gives a feasible point, not the closest one. ``alpha`` defaults to ``2.5 * eps / steps``.
    - ``method="noise"``: one draw of Gaussian noise filtered to the band and scaled to
      ``||delta||_norm = eps`` exactly (seeded with ``seed``): the random-perturbation baseline.

    Args:
        model: the classifier (eval mode for the attack, modes restored).
        x: clean batch ``[B, C, H, W]`` (on the model's device).
        y: ``[B]`` true labels.
        eps: the perturbation size (>= 0) in ``norm`` (``"linf"`` or ``"l2"``).
        radius: the cut-off radius between the bands (>= 0).
        band: ``"low"`` or ``"high"``.
        method: ``"pgd"`` or ``"noise"``.
        steps, alpha: PGD steps and step size.
        seed: the noise's seed.
        bounds: ``(lo, hi)`` image bounds the perturbed input is clipped to, or ``None``.
        logits: where the logits are in the model's output.

    Returns:
        ``clip_bounds(x + delta)`` (PGD: the last iterate), shaped like ``x``.
    """
    check_model(model)
    s = _band_settings(eps, radius, band, method, norm, steps, alpha, seed, bounds)
    _check_spatial(x, "x")
    y = check_labels(y, "y", x.shape[0])
    with eval_mode(model):
        return _band_attack(model, x.detach(), y.to(x.device), s, seed, logits)[0]


def band_limited_robustness(
    model: torch.nn.Module,
    data: Data,
    *,
    eps: float,
    radius: float,
    band: str,
    method: str = "pgd",
    norm: str = "linf",
    steps: int = 10,
    alpha: float | None = None,
    seed: int = 0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    device: torch.device | str | None = None,
    logits: LogitsSelector = None,
    progress: bool = False,
) -> float:
    r"""Accuracy under perturbations confined to the low or the high frequencies: the perturbation of
    :func:`band_limited_attack` (see there) on every batch.

    With ``method="pgd"`` a sample counts as robust only if it is classified correctly at every iterate
    (each iterate is a valid band-limited perturbation).

    Args:
        model: the classifier; eval mode, modes restored.
        data: a ``TensorData``, a pair ``(x, y)`` or an iterable of batches.
        eps, radius, band, method, norm, steps, alpha, bounds: as :func:`band_limited_attack`.
        seed: the noise's seed (per batch ``seed + batch index``).
        batch_size, device, logits, progress: as :func:`nonrobust_ext.robust_accuracy`.

    Returns:
        The accuracy under the band-limited perturbation, a float in [0, 1].
    """
    check_model(model)
    s = _band_settings(eps, radius, band, method, norm, steps, alpha, seed, bounds)
    check_bool(progress, "progress")
    dev = resolve_device(model, device)
    n = robust = 0
    with eval_mode(model):
        batches = progress_bar(labelled_batches(data, batch_size), enabled=progress,
                               description=f"{band}-band robustness")
        for b, (x, y) in enumerate(batches):
            x, y = x.to(dev), y.to(dev)
            n += len(y)
            robust += int(_band_attack(model, x, y, s, seed + b, logits)[1].sum())
    return robust / n  # n >= 1: labelled_batches raises for data without samples



def plot_accuracy_by_frequency(results: Mapping[str, Mapping[str, Any]], path: str, *, title: str | None = None
                               ) -> None:
    """Low- and high-pass accuracy against the radius, one line pair per model (``{name:
    accuracy_by_frequency(...)}``), saved to ``path`` (needs matplotlib)."""
    if not isinstance(results, Mapping) or not results:
        raise TypeError("results must be a non-empty dict {model name: accuracy_by_frequency result}")
    figure = pyplot_figure()(figsize=(5.5, 4.0))
    ax = figure.subplots()
    for name, r in results.items():
        line = ax.plot(r["radii"], r["low_accuracy"], marker="o", label=f"{name} low-pass")[0]
        ax.plot(r["radii"], r["high_accuracy"], marker="s", ls="--", color=line.get_color(),
                label=f"{name} high-pass")
    ax.set_xlabel("radius")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title(title or "accuracy on frequency-filtered inputs")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_perturbation_spectra(spectra: Mapping[str, torch.Tensor | Sequence[float]], path: str, *,
                              title: str | None = None, log: bool = True) -> None:
    """Radially averaged perturbation power spectra, one line per model (``{name: spectrum}``), saved
    to ``path`` (needs matplotlib)."""
    if not isinstance(spectra, Mapping) or not spectra:
        raise TypeError("spectra must be a non-empty dict {model name: spectrum [R]}")
    figure = pyplot_figure()(figsize=(5.0, 3.6))
    ax = figure.subplots()
    for name, s in spectra.items():
        values = s.tolist() if isinstance(s, torch.Tensor) else list(s)
        ax.plot(range(len(values)), values, marker=".", label=name)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("radius (frequency)")
    ax.set_ylabel("perturbation power")
    ax.legend(fontsize=8)
    ax.set_title(title or "spectrum of adversarial perturbations")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


__all__ = [
    "accuracy_by_frequency", "adversarial_spectrum", "band_limited_attack", "band_limited_robustness",
    "frequency_decomposition", "perturbation_spectrum", "plot_accuracy_by_frequency", "plot_perturbation_spectra",
    "radius_grid",
]
