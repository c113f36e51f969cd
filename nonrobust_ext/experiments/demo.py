"""The attack demo: train a small CNN on a synthetic task, then measure how PGD (L-inf) and random
noise of the same size change its accuracy over an eps grid.

Synthetic data keeps the demo runnable anywhere without downloads: each class is a fixed random
+-1 pattern at low contrast on grey, plus pixel noise. A model that learns it is accurate on clean
inputs and on random noise, but a perturbation aligned with the gradient crosses its margin: the
non-robustness the library is about, in seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._validate import check_int, check_optional_path, check_reals
from ..attacks import pgd
from ._output import check_output_dir
from ._settings import setting


@dataclasses.dataclass
class DemoConfig:
    """What the demo trains and attacks. The fields made with :func:`setting` are the ``demo``
    command's options (the CLI builds them from these descriptions).

    Raises:
        TypeError: a setting of the wrong type (``steps=1.5``).
        ValueError: a setting out of range, NaN or infinite; the message starts with its name.
    """

    out: Path = setting(Path("out/demo"), "where results.json and report.md go", option="--out")
    seed: int = setting(0, "seeds the data, the model and the attacks", option="--seed")
    num_classes: int = 10
    image_size: int = 16
    train_samples: int = 6000
    test_samples: int = 1000
    epochs: int = setting(4, "training epochs", option="--epochs")
    batch_size: int = 128
    eps_grid: tuple[float, ...] = setting((0.0, 0.02, 0.05, 0.1, 0.15, 0.2), "comma-separated L-inf radii",
                                          option="--eps")
    steps: int = setting(10, "PGD steps", option="--steps")
    restarts: int = 1

    def __post_init__(self) -> None:
        out = check_optional_path(self.out, "out")
        if out is None:
            raise TypeError("out must be a path, got None")
        self.out = Path(out)
        self.seed = check_int(self.seed, "seed", 0)
        self.num_classes = check_int(self.num_classes, "num_classes", 2)
        self.image_size = check_int(self.image_size, "image_size", 2)  # the CNN pools by 2 once
        self.train_samples = check_int(self.train_samples, "train_samples", 1)
        self.test_samples = check_int(self.test_samples, "test_samples", 1)
        self.epochs = check_int(self.epochs, "epochs", 1)
        self.batch_size = check_int(self.batch_size, "batch_size", 1)
        self.eps_grid = check_reals(self.eps_grid, "eps_grid", low=0)
        self.steps = check_int(self.steps, "steps", 1)
        self.restarts = check_int(self.restarts, "restarts", 1)


def synthetic_patterns(n: int, *, seed: int, num_classes: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``[n, 1, size, size]`` in [0, 1] and labels; the class patterns are fixed."""
    patterns = torch.randint(0, 2, (num_classes, 1, size, size), generator=torch.Generator().manual_seed(12345))
    patterns = patterns.float() * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = 0.5 + 0.12 * patterns[y] + 0.15 * torch.randn(n, 1, size, size, generator=g)
    return x.clamp(0, 1), y


def small_cnn(num_classes: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 16, num_classes),
    )


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def run_demo(cfg: DemoConfig, log: Callable[..., None] = print) -> dict[str, Any]:
    """Train the demo's CNN, attack it over ``cfg.eps_grid``, write ``results.json`` and ``report.md``
    under ``cfg.out`` and return the results.

    Raises:
        TypeError, ValueError: a bad setting (checked again here: a DemoConfig can be changed after
            it was made).
        NotADirectoryError, PermissionError: ``cfg.out`` cannot be a folder written to.
    """
    if not isinstance(cfg, DemoConfig):
        raise TypeError(f"cfg must be a DemoConfig, got {type(cfg).__name__}")
    cfg = dataclasses.replace(cfg)  # runs __post_init__'s checks on the values as they are now
    check_output_dir(cfg.out, "out")
    torch.manual_seed(cfg.seed)
    shape = dict(num_classes=cfg.num_classes, size=cfg.image_size)
    x_train, y_train = synthetic_patterns(cfg.train_samples, seed=cfg.seed + 1, **shape)
    x_test, y_test = synthetic_patterns(cfg.test_samples, seed=cfg.seed + 2, **shape)
    model = small_cnn(cfg.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {total / len(order):.4f}")
    train_seconds = time.perf_counter() - started
    model.eval()

    rows = []
    noise_gen = torch.Generator().manual_seed(cfg.seed + 3)
    for eps in cfg.eps_grid:
        t0 = time.perf_counter()
        x_adv = pgd(model, x_test, y_test, eps=eps, steps=cfg.steps, restarts=cfg.restarts, seed=cfg.seed)
        attack_seconds = time.perf_counter() - t0
        signs = torch.randint(0, 2, x_test.shape, generator=noise_gen).float() * 2 - 1
        rows.append(
            {
                "eps": eps,
                "pgd_accuracy": _accuracy(model, x_adv, y_test),
                "random_sign_noise_accuracy": _accuracy(model, (x_test + eps * signs).clamp(0, 1), y_test),
                "attack_seconds": attack_seconds,
            }
        )
        log(f"eps {eps:.3f}: PGD-{cfg.steps} accuracy {rows[-1]['pgd_accuracy']:.3f}, "
            f"random +-eps noise accuracy {rows[-1]['random_sign_noise_accuracy']:.3f}")

    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "clean_accuracy": _accuracy(model, x_test, y_test),
        "train_seconds": train_seconds,
        "rows": rows,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    _write_atomically(cfg.out / "results.json", json.dumps(results, indent=2))
    _write_atomically(cfg.out / "report.md", render_report(results))
    return results


def render_report(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        "# nonrobust_ext attack demo",
        "",
        f"A small CNN trained on a synthetic {cfg['num_classes']}-class task ({cfg['train_samples']} images, "
        f"{cfg['epochs']} epochs, {results['train_seconds']:.1f} s) reaches clean accuracy "
        f"{results['clean_accuracy']:.3f} on {cfg['test_samples']} held-out images. L-inf PGD-{cfg['steps']} "
        "against random +-eps noise of the same size:",
        "",
        "| eps | PGD accuracy | random-noise accuracy | attack time (s) |",
        "|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['eps']:.3f} | {r['pgd_accuracy']:.3f} | {r['random_sign_noise_accuracy']:.3f} "
            f"| {r['attack_seconds']:.2f} |"
        )
    worst = results["rows"][-1]
    lines += [
        "",
        f"At eps = {worst['eps']:.3f}, PGD leaves {worst['pgd_accuracy']:.1%} accuracy while random noise of the "
        f"same L-inf size leaves {worst['random_sign_noise_accuracy']:.1%}.",
        "",
    ]
    return "\n".join(lines)
