"""Loading and saving model weights.

Checkpoints come from other people's machines, so files are read with
``torch.load(..., weights_only=True)``: tensors and plain containers only, never arbitrary pickled
objects (which can run code when unpickled). Every file is verified first (the CRC-32 of each record
of torch's zip archive, which ``torch.load`` itself never checks): a corrupted file raises a
``ValueError`` naming it instead of loading changed weights; a legacy (pre-zip) torch file has no
checksums and loads with an :class:`~nonrobust_ext._io.UnverifiedFileWarning`.

Formats :func:`load_weights` understands (``format="auto"`` tells them apart):

- ``"native"``: this library's and torchvision's keys (``conv1.weight``, ``layer1.0.bn1.running_mean``,
  ``fc.bias``, ...), as a bare state dict or wrapped under ``"state_dict"``, ``"model"`` or
  ``"model_state"`` (training checkpoints store the model under ``"model"``);
- ``"dataparallel"``: the same keys behind ``module.`` (``nn.DataParallel`` / DDP); a ``_orig_mod.``
  prefix (``torch.compile``) is removed too;
- ``"robustness"``: the robustness library's (MadryLab/robustness, microsoft/robust-models-transfer)
  ``{"model": sd, "epoch": ...}`` or ``{"state_dict": sd}``, where ``sd`` wraps the classifier in an
  ``AttackerModel`` behind DataParallel: ``module.model.<torchvision key>``, the attacker's copy of the
  same weights ``module.attacker.model.<key>``, and the input normalisation
  ``module.normalizer.new_mean`` / ``new_std`` (shape ``[3, 1, 1]``). The classifier keys are loaded,
  the attacker copy is dropped, and the model's :class:`Normalize` takes the file's mean/std.

Files written by :func:`save_weights` are ``{"format": ..., "state_dict": sd, "normalize": {"mean", "std"},
"arch": name}``: the normalisation travels with the weights it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .._io import atomic_torch_save, safe_torch_load
from .._validate import check_bool, check_choice, check_finite
from ._base import Normalize

PathLike = Union[str, "os.PathLike[str]"]

SAVE_FORMAT = "nonrobust_ext.weights/1"
WRAPPER_KEYS = ("state_dict", "model", "model_state")
FORMATS = ("auto", "native", "torchvision", "dataparallel", "robustness")
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")
_HEAD = "fc."
_SHOW = 10  # keys listed per category in a mismatch message


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        format: the format the file was read as: ``"native"``, ``"dataparallel"`` or ``"robustness"``.
        loaded: model keys whose values came from the file.
        skipped: file keys that were not loaded into the state dict: the head with
            ``exclude_head=True``, the robustness library's attacker copy and normaliser buffers (the
            latter set the model's normalisation instead), unexpected keys with ``strict=False``.
        missing: model keys the file did not provide (kept at their current values); only possible
            with ``strict=False``, or for BatchNorm ``num_batches_tracked`` counters, which
            checkpoints older than PyTorch 0.4 (torchvision's original ResNet weights) lack.
        normalization_from_file: whether the model's :class:`Normalize` was set from the file.
        mean, std: the normalisation taken from the file (``None`` when not, or when it is the identity).
        source: the path, or ``"<state dict>"``.
        wrapper: the key the state dict was found under (``"model"``, ``"state_dict"``, ...), or ``None``.
        stripped_prefix: the wrapper prefix removed from every key (``"module."``), or ``""``.
    """

    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    normalization_from_file: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None
    source: str = "<state dict>"
    wrapper: str | None = None
    stripped_prefix: str = ""


def _read(path: PathLike) -> Any:
    """The file's contents, verified (every record's checksum) and read weights-only: the one loader
    (:func:`nonrobust_ext._io.safe_torch_load`) every file of the library goes through."""
    return safe_torch_load(path, map_location="cpu")


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], str | None, Any]:
    """(state dict, the key it was under, the file's "normalize" entry or None)."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"a checkpoint must be a state dict or a dict holding one, got {type(obj).__name__}")
    if _is_state_dict(obj):
        return dict(obj), None, None
    for key in WRAPPER_KEYS:
        if key in obj and _is_state_dict(obj[key]):
            return dict(obj[key]), key, obj.get("normalize")
    found = [k for k in WRAPPER_KEYS if k in obj]
    detail = (f"its {found[0]!r} entry is not a mapping of names to tensors" if found
              else f"top-level keys: {sorted(map(str, obj))[:_SHOW]}")
    raise ValueError(
        "no state dict found in the checkpoint: expected a mapping of names to tensors, bare or under one of "
        f"{list(WRAPPER_KEYS)}; {detail}"
    )


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items()}


def _flat_stats(t: torch.Tensor, name: str) -> list[float]:
    if t.numel() == 0 or not t.is_floating_point():
        raise ValueError(
            f"the checkpoint's {name} must be a non-empty floating-point tensor, got {t.dtype} {tuple(t.shape)}"
        )
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def _file_normalize(entry: Any) -> tuple[list[float] | None, list[float] | None]:
    if not isinstance(entry, Mapping) or not set(entry) <= {"mean", "std"}:
        raise ValueError(f"the checkpoint's 'normalize' entry must be {{'mean': ..., 'std': ...}}, got {entry!r}")
    out = []
    for name in ("mean", "std"):
        v = entry.get(name)
        if v is not None and not isinstance(v, torch.Tensor):
            raise ValueError(f"the checkpoint's normalize[{name!r}] must be a tensor or None, got {type(v).__name__}")
        out.append(None if v is None else _flat_stats(v, f"normalize[{name!r}]"))
    return out[0], out[1]


def _convert(sd: dict[str, torch.Tensor], fmt: str, model_keys: set[str], report: LoadReport
             ) -> dict[str, tuple[str, torch.Tensor]]:
    """Model key -> (file key, tensor); fills report.format / stripped_prefix / skipped / normalisation."""
    original = {k: k for k in sd}  # current key -> key as written in the file
    if fmt == "dataparallel" and not all(k.startswith("module.") for k in sd):
        raise ValueError("format='dataparallel' but not every key starts with 'module.'")
    if fmt != "native":
        for prefix in _STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                original = {k[len(prefix):]: original[k] for k in sd}
                sd = _strip(sd, prefix)
                report.stripped_prefix += prefix
    robust_layout = (any(k.startswith("model.") for k in sd)
                     and ("normalizer.new_mean" in sd or any(k.startswith("attacker.") for k in sd))
                     and not any(k.startswith("model.") for k in model_keys))
    if fmt == "robustness" and not any(k.startswith("model.") for k in sd):
        raise ValueError("format='robustness' but the checkpoint has no 'module.model.*' / 'model.*' keys")
    if fmt == "robustness" or (fmt == "auto" and robust_layout):
        report.format = "robustness"
        out: dict[str, tuple[str, torch.Tensor]] = {}
        for k, v in sd.items():
            if k.startswith("model."):
                out[k[len("model."):]] = (original[k], v)
            elif k.startswith(("attacker.", "normalizer.")):
                report.skipped.append(original[k])
            else:
                out[k] = (original[k], v)  # left for the mismatch check to report
        mean = sd.get("normalizer.new_mean", sd.get("attacker.normalize.new_mean"))
        std = sd.get("normalizer.new_std", sd.get("attacker.normalize.new_std"))
        if mean is not None and std is not None:
            report.mean, report.std = _flat_stats(mean, "new_mean"), _flat_stats(std, "new_std")
            report.normalization_from_file = True
        return out
    report.format = "dataparallel" if report.stripped_prefix.startswith("module.") else "native"
    return {k: (original[k], v) for k, v in sd.items()}


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f", ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def _shape(s: torch.Size) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def load_weights(model: nn.Module, path_or_state_dict: PathLike | Mapping[str, Any], *, format: str = "auto",
                 exclude_head: bool = False, strict: bool = True) -> LoadReport:
    """Loads a checkpoint into ``model`` in place, converting known formats (see the module docstring).

    Nothing is modified unless every check passes.

    Args:
        model: the model to load into (an :class:`ImageClassifier`, or any ``nn.Module``; the
            normalisation is applied only where the model has a ``normalize`` :class:`Normalize`).
        path_or_state_dict: a file path (verified, then read with ``weights_only=True``), or an already
            loaded state dict / checkpoint dict.
        format: ``"auto"`` (detect), ``"native"`` (alias ``"torchvision"``: keys used as they are),
            ``"dataparallel"`` or ``"robustness"``.
        exclude_head: skip the file's ``fc.*`` and keep the model's head (fine-tuning to a new label
            set, e.g. after :meth:`ImageClassifier.reset_head`).
        strict: require the file to provide exactly the model's keys. Shapes must match either way.

    Returns:
        A :class:`LoadReport`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``path_or_state_dict`` neither a path nor a mapping,
            ``exclude_head`` / ``strict`` not a bool.
        FileNotFoundError: no such file.
        ValueError: corrupt (a record's checksum does not match), unreadable or unsafe file, unknown
            format, no state dict in the file, a NaN or infinite value in a tensor that would be loaded, or
            keys / shapes that do not match: the message lists missing keys, unexpected keys and shape
            mismatches (model shape vs file shape), the first 10 of each with counts.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_choice(format, "format", FORMATS)
    check_bool(exclude_head, "exclude_head")
    check_bool(strict, "strict")
    fmt = "native" if format == "torchvision" else format
    if isinstance(path_or_state_dict, Mapping):
        obj, source = path_or_state_dict, "<state dict>"
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        obj, source = _read(path_or_state_dict), os.fspath(path_or_state_dict)
    else:
        raise TypeError(f"path_or_state_dict must be a path or a mapping, got {type(path_or_state_dict).__name__}")

    sd, wrapper, normalize_entry = _unwrap(obj)
    report = LoadReport(format=fmt, source=source, wrapper=wrapper)
    target = model.state_dict()
    converted = _convert(sd, fmt, set(target), report)
    if not report.normalization_from_file and normalize_entry is not None:
        report.mean, report.std = _file_normalize(normalize_entry)
        report.normalization_from_file = True

    for alias, name in getattr(model, "state_dict_aliases", {}).items():
        converted = {(name + k[len(alias):] if k.startswith(alias + ".") else k): v for k, v in converted.items()}
    if exclude_head:
        report.skipped += [fk for k, (fk, _) in converted.items() if k.startswith(_HEAD)]
        converted = {k: v for k, v in converted.items() if not k.startswith(_HEAD)}
        target = {k: v for k, v in target.items() if not k.startswith(_HEAD)}

    missing = [k for k in target if k not in converted]
    unexpected = [fk for k, (fk, _) in converted.items() if k not in target]
    mismatched = [f"{k}: {_shape(target[k].shape)} vs {_shape(v.shape)}"
                  for k, (_, v) in converted.items() if k in target and v.shape != target[k].shape]
    # torchvision's original ResNet weights predate BatchNorm's step counter; it is not a weight.
    benign = [k for k in missing if k.endswith("num_batches_tracked")]
    problems = [k for k in missing if k not in benign]
    if mismatched or (strict and (problems or unexpected)):
        what = type(model).__name__ + (f" ({model.arch})" if isinstance(getattr(model, "arch", None), str) else "")
        msg = f"checkpoint {source!r} (read as format {report.format!r}) does not match {what}:"
        if strict and problems:
            msg += _listing("missing keys (in the model, not in the file)", problems)
        if strict and unexpected:
            msg += _listing("unexpected keys (in the file, not in the model)", unexpected)
        if mismatched:
            msg += _listing("shape mismatches (model shape vs file shape)", mismatched)
        head = [m for m in mismatched if m.startswith(_HEAD)]
        if head and not exclude_head:
            msg += (f"\n  hint: the head differs ({'; '.join(head)}); exclude_head=True keeps the model's own head "
                    "(fine-tuning to a new label set)")
        if any(m.startswith("conv1.weight:") for m in mismatched):
            msg += "\n  hint: conv1 differs: check in_channels and the architecture (e.g. resnet18 vs resnet18_small)"
        raise ValueError(msg)

    norm = getattr(model, "normalize", None)
    new_norm = None
    if report.normalization_from_file:
        if isinstance(norm, Normalize):
            # Validate (channel count included) before anything is modified.
            new_norm = Normalize(report.mean, report.std)
            n, c = new_norm.num_channels, getattr(model, "in_channels", None)
            if n is not None and c is not None and n not in (1, c):
                raise ValueError(f"the checkpoint's normalisation has {n} channels but the model takes {c}")
        else:
            report.normalization_from_file = False

    to_load = {k: v for k, (_, v) in converted.items() if k in target}
    # A NaN weight (a diverged run saved as it was) makes every output NaN: refuse it before anything changes.
    check_finite_state(((converted[k][0], v) for k, v in to_load.items()), source)
    with torch.no_grad():
        result = model.load_state_dict(to_load, strict=False)
    if result.unexpected_keys:  # cannot happen after the checks above; guards against a silent partial load
        raise RuntimeError(f"load_state_dict reported unexpected keys {result.unexpected_keys[:_SHOW]}")
    if new_norm is not None:
        norm.set_(new_norm.mean, new_norm.std)
        ref = next((t for t in model.parameters() if t.is_floating_point()), None)
        if ref is not None and norm.mean is not None:  # follow the model, as model.to() would have
            norm.mean, norm.std = (t.to(device=ref.device, dtype=ref.dtype) for t in (norm.mean, norm.std))
    report.loaded = list(to_load)
    report.missing = missing
    report.skipped += [fk for k, (fk, _) in converted.items() if k not in target]
    return report


def check_finite_state(tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Every floating-point tensor finite, or a ``ValueError`` naming ``source`` and the first bad key.

    Used on every state that is loaded or saved: a NaN weight or BatchNorm statistic never computes
    anything meaningful, so it is refused where it would enter or leave.
    """
    for key, value in tensors:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            check_finite(value, f"{source}: {key}")


def save_weights(model: nn.Module, path: PathLike) -> Path:
    """Writes ``model``'s weights and input normalisation to ``path`` atomically.

    The file is written to a temporary file in the same folder, flushed and fsynced, then renamed over
    ``path`` (``os.replace``): a crash leaves the old file or the new one, never a torn one, and no
    temporary file stays behind. Parent folders are created.

    The file holds ``{"format", "state_dict", "normalize": {"mean", "std"}, "arch"}`` (tensors on the
    CPU); :func:`load_weights` reads it back, normalisation included.

    Returns:
        The path written.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``path`` not a path.
        ValueError: a weight or buffer holds NaN or infinite values (nothing is written: a file of
            NaN weights would only spread the failure).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    check_finite_state(model.state_dict().items(), f"save_weights: {type(model).__name__}")
    payload: dict[str, Any] = {
        "format": SAVE_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": str(getattr(model, "arch", type(model).__name__)),
    }
    norm = getattr(model, "normalize", None)
    if isinstance(norm, Normalize):
        payload["normalize"] = {name: None if t is None else t.detach().cpu().clone()
                                for name, t in (("mean", norm.mean), ("std", norm.std))}
    atomic_torch_save(payload, path)
    return path
