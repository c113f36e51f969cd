"""What the default study's speed measures buy: EfficientNet-Lite0 (ImageNet weights, 10-class head) on
Fashion-MNIST-shaped inputs (1x28x28, resized inside the model), on this machine.

Each row times one unit of the study's work, interleaved over rounds (median and IQR):

- ``fwd+grad``: one forward and input-gradient of a batch of 128 (the unit every attack repeats) at
  32, 48 and 64 px, contiguous vs channels_last, fp32 vs bfloat16 autocast, and ``torch.compile`` of
  the model at 32 px (compiled during the warm-up, which is not timed);
- ``train step``: one optimiser step of standard fine-tuning and of PGD-AT fine-tuning (3 steps) at
  the study's 32 px, contiguous vs channels_last;
- ``eps grid``: ``robust_accuracy`` with PGD-10 over the study's radii (0, 1, 2, 4, 8 /255) on 256
  Fashion-MNIST test images (the backbone with a linear-probe head), with and without ``early_stop``
  (fooled samples leave the batch; true-label confidence is then measured where a sample first fell,
  which is why the study keeps it off).

Writes ``study_<device>.md`` / ``.csv`` under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from nonrobust_ext import data as nxdata
from nonrobust_ext import models, robust_accuracy, training

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import RESULTS, run_header, summarise, timed, write_csv, write_markdown  # noqa: E402

EPS = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


def _model(size: int, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create("efficientnet_lite0", num_classes=10, pretrained="imagenet", input_size=size)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _forward_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      amp: torch.dtype | None, compiled: bool = False) -> Callable[[], object]:
    model.eval().requires_grad_(False)
    if compiled:  # inductor's CPU backend; the first calls (the warm-up) pay the compilation
        model = torch.compile(model)

    def run() -> object:
        xx = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = F.cross_entropy(model(xx), y)
        return torch.autograd.grad(loss, xx)

    return run


def _train_step(model: torch.nn.Module, objective: training.Objective, x: torch.Tensor,
                y: torch.Tensor) -> Callable[[], object]:
    model.train().requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> object:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(model, model, x, y, seed=0)
        loss.backward()
        opt.step()
        return loss

    return run


def _linear_probe(n_test: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """The ImageNet backbone with a head fitted on 1,000 Fashion-MNIST images (features frozen): a real,
    non-robust classifier for the eps grid, and ``n_test`` test images. Falls back to random images
    (labels = the model's own predictions) when the dataset is not installed."""
    model = _model(32, True).eval()
    g = torch.Generator().manual_seed(1)
    try:
        train, test = nxdata.load("fashion_mnist", train=True), nxdata.load("fashion_mnist", train=False)
    except FileNotFoundError:
        x = torch.rand(n_test, 1, 28, 28, generator=g)
        with torch.no_grad():
            return model, (x, model(x).argmax(1))
    train = nxdata.few_shot(train, 100, seed=0)
    with torch.no_grad():
        features = model.forward_features(train.x)
    opt = torch.optim.Adam(model.fc.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model.fc(features), train.y).backward()
        opt.step()
    keep = torch.randperm(len(test), generator=g)[:n_test]
    return model, (test.x[keep], test.y[keep])


def cases(quick: bool) -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    batch = 32 if quick else 128
    x = torch.rand(batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    out: dict[str, Callable[[], object]] = {}
    for size in ((32,) if quick else (32, 48, 64)):
        for layout in ("contiguous", "channels_last"):
            for amp in (None, torch.bfloat16):
                name = f"fwd+grad {size}px {layout} {'bf16' if amp else 'fp32'}"
                out[name] = _forward_gradient(_model(size, layout == "channels_last"), x, y, amp)
    out["fwd+grad 32px channels_last fp32 torch.compile"] = _forward_gradient(_model(32, True), x, y, None, True)
    for layout in ("contiguous", "channels_last"):
        for label, objective in (("standard", training.Standard()),
                                 ("PGD-AT 3 steps", training.PGDAdversarial(eps=8 / 255, steps=3))):
            out[f"train step {label} 32px {layout}"] = _train_step(_model(32, layout == "channels_last"),
                                                                   objective, x, y)
    grid_model, (xe, ye) = _linear_probe(64 if quick else 256)
    for stop in (False, True):
        out[f"eps grid PGD-10 32px channels_last early_stop={stop}"] = (
            lambda stop=stop: robust_accuracy(grid_model, (xe, ye), eps=EPS, attack="pgd", steps=10, seed=0,
                                              early_stop=stop))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="smaller batches, one size (a dry run)")
    args = parser.parse_args()
    device = torch.device("cpu")
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    runs = cases(args.quick)
    for fn in runs.values():  # warm-up (allocator, oneDNN primitives)
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    rows = []
    for name, ts in times.items():
        t = summarise(ts)
        rows.append({"case": name, "median_s": f"{t.median_s:.4f}", "iqr_s": f"{t.iqr_s:.4f}", "n": t.n})
        print(f"{name:60s} {t.median_s * 1000:9.1f} ms  (IQR {t.iqr_s * 1000:.1f})")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "study_cpu" + ("_quick" if args.quick else "")
    write_csv(args.out / f"{stem}.csv", rows, ["case", "median_s", "iqr_s", "n"])
    write_markdown(args.out / f"{stem}.md", "The default study's units of work: what each speed measure buys",
                   run_header(started, device) + [f"- Rounds: {args.rounds} (interleaved), median and IQR"],
                   ["case", "median (ms)", "IQR (ms)"],
                   [(r["case"], f"{float(r['median_s']) * 1000:.1f}", f"{float(r['iqr_s']) * 1000:.1f}")
                    for r in rows], "What each measure buys (ratios of medians)", _ratios(times), [])


def _ratios(times: dict[str, list[float]]) -> list[str]:
    """``a / b`` for the pairs of cases that differ in one measure, where both ran."""
    median = {name: summarise(ts).median_s for name, ts in times.items()}
    pairs = []
    for size in (32, 48, 64):
        base = f"fwd+grad {size}px contiguous fp32"
        pairs += [(f"channels_last, fwd+grad {size}px fp32", base, f"fwd+grad {size}px channels_last fp32"),
                  (f"bf16 autocast, fwd+grad {size}px channels_last", f"fwd+grad {size}px channels_last fp32",
                   f"fwd+grad {size}px channels_last bf16")]
    for size in (48, 64):
        pairs.append((f"32 px instead of {size} px, fwd+grad channels_last fp32",
                      f"fwd+grad {size}px channels_last fp32", "fwd+grad 32px channels_last fp32"))
    for label in ("standard", "PGD-AT 3 steps"):
        pairs.append((f"channels_last, train step {label}", f"train step {label} 32px contiguous",
                      f"train step {label} 32px channels_last"))
    pairs.append(("torch.compile of the model, fwd+grad 32px channels_last fp32", "fwd+grad 32px channels_last fp32",
                  "fwd+grad 32px channels_last fp32 torch.compile"))
    pairs.append(("early_stop (compaction), eps grid", "eps grid PGD-10 32px channels_last early_stop=False",
                  "eps grid PGD-10 32px channels_last early_stop=True"))
    return [f"- {what}: {median[slow] / median[fast]:.2f}x faster" for what, slow, fast in pairs
            if slow in median and fast in median]


if __name__ == "__main__":
    main()
