"""PGD adversarial training (Madry et al.), one epoch, end to end: nonrobust_ext.training.train against
a pure-PyTorch PGD-AT loop and against the epoch's limit.

``nonrobust_ext``  ``training.train(model, PGDAdversarial(eps, steps), data, ...)``: the library's loop
                   (data order, fused attack ops, checkpoint-free here, no progress bar)
``pytorch_loop``   PGD-AT as research code writes it: the attack with ``loss.backward()`` (parameter
                   gradients included) and separate sign/add/clamp ops, then the update
``limit``          per batch K x (forward + input-gradient, eval mode) + (forward + full backward +
                   optimiser step, train mode) on pre-sliced batches, measured in the same run: what any
                   PGD-AT epoch must spend

Correctness first: one training step of each implementation from the same weights and the same random
start must give the same weights (within float tolerance) before anything is timed.

Run:  python benchmarks/bench_training.py [--quick] [--device cuda]
Out:  benchmarks/results/training_<tag>.csv and .md
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import nonrobust_ext
from nonrobust_ext import data as nxdata
from nonrobust_ext import models, training

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import RESULTS, device_name, git_commit, run_header, summarise, timed  # noqa: E402
from bench_attacks import pytorch_loop as attack_loop  # noqa: E402


@dataclass(frozen=True)
class Case:
    model: str = "resnet8"
    in_channels: int = 1
    size: int = 28
    samples: int = 1024
    batch: int = 128
    eps: float = 0.1
    steps: int = 10
    lr: float = 0.05

    @property
    def alpha(self) -> float:
        return 2.5 * self.eps / self.steps


def _model(c: Case, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create(c.model, num_classes=10, in_channels=c.in_channels).to(device)


def _optimizer(model: torch.nn.Module, c: Case) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=c.lr, momentum=0.9, weight_decay=5e-4)


def ours(model, d: nxdata.TensorData, c: Case, device) -> None:
    config = training.TrainConfig(epochs=1, batch_size=c.batch, lr=c.lr, schedule="constant", seed=0)
    training.train(model, training.PGDAdversarial(eps=c.eps, steps=c.steps), d, config=config, device=device,
                   progress=False)


def _pytorch_step(model, opt, x, y, c: Case, start: torch.Tensor) -> None:
    """One PGD-AT step as research code writes it: the attack loop of bench_attacks, then the update."""
    model.eval()
    x_adv = attack_loop(model, x, y, c, start)
    model.train()
    opt.zero_grad()
    F.cross_entropy(model(x_adv), y).backward()
    opt.step()


def pytorch_loop(model, d: nxdata.TensorData, c: Case, device) -> None:
    opt = _optimizer(model, c)
    for x, y in nxdata.batches(d, c.batch, shuffle=True, seed=0, epoch=0):
        x, y = x.to(device), y.to(device)
        start = (x + torch.empty_like(x).uniform_(-c.eps, c.eps)).clamp(0, 1)
        _pytorch_step(model, opt, x, y, c, start)


def limit(model, d: nxdata.TensorData, c: Case, device, sliced=None) -> None:
    opt = _optimizer(model, c)
    for x, y in sliced:
        model.eval()
        for _ in range(c.steps):
            x_req = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(x_req), y), x_req)
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def check_one_step(c: Case, device: torch.device) -> float:
    """Max abs weight difference after one PGD-AT step of ours vs the pure loop from the same start."""
    d = nxdata.synthetic(c.batch, num_classes=10, shape=(c.in_channels, c.size, c.size), seed=1)
    a, b = _model(c, device), _model(c, device)
    x, y = d.x.to(device), d.y.to(device)
    # The library's first step: the batch order and the attack seed the loop uses at step 0.
    config = training.TrainConfig(steps=1, batch_size=c.batch, lr=c.lr, schedule="constant", seed=0,
                                  weight_decay=5e-4)
    training.train(a, training.PGDAdversarial(eps=c.eps, steps=c.steps), d, config=config, device=device,
                   progress=False)
    (xb, yb), = list(nxdata.batches(d, c.batch, shuffle=True, seed=0, epoch=0))
    xb, yb = xb.to(device), yb.to(device)
    start = xb.clone()
    seed = training.loop._step_seed(config, 0, 0)
    g = torch.Generator().manual_seed(seed)
    nonrobust_ext.ops.random_init_(start, xb, eps=c.eps, norm="linf", seed=nonrobust_ext.ops.draw_seed(g))
    _pytorch_step(b, _optimizer(b, c), xb, yb, c, start)
    del x, y
    return max(float((p - q).abs().max()) for p, q in zip(a.state_dict().values(), b.state_dict().values(),
                                                           strict=True) if p.is_floating_point())


def run(c: Case, device: torch.device, rounds: int) -> list[dict]:
    diff = check_one_step(c, device)
    assert diff < 1e-4, f"one PGD-AT step differs from the pure-PyTorch step by {diff:g}"
    d = nxdata.synthetic(c.samples, num_classes=10, shape=(c.in_channels, c.size, c.size), seed=1)
    sliced = [(x.to(device), y.to(device)) for x, y in nxdata.batches(d, c.batch, shuffle=True, seed=0, epoch=0)]
    impls = {
        "nonrobust_ext": lambda m: ours(m, d, c, device),
        "pytorch_loop": lambda m: pytorch_loop(m, d, c, device),
        "limit": lambda m: limit(m, d, c, device, sliced),
    }
    base = _model(c, device)
    times: dict[str, list[float]] = {name: [] for name in impls}
    for fn in impls.values():  # warm-up
        fn(copy.deepcopy(base))
    for _ in range(rounds):
        for name, fn in impls.items():
            model = copy.deepcopy(base)
            times[name].append(timed(lambda f=fn, m=model: f(m), device))
    stats = {n: summarise(t, method="exclusive") for n, t in times.items()}
    med = {n: s.median_s for n, s in stats.items()}
    rows = []
    for name in impls:
        rows.append({
            "model": c.model, "input": f"{c.in_channels}x{c.size}x{c.size}", "samples": c.samples, "batch": c.batch,
            "pgd_steps": c.steps, "impl": name, "median_s": med[name], "iqr_s": stats[name].iqr_s,
            "ratio_to_limit": med[name] / med["limit"], "speedup_vs_pytorch_loop": med["pytorch_loop"] / med[name],
            "one_step_max_weight_diff": diff, "device": device_name(device), "torch": torch.__version__,
            "git": git_commit(),
        })
    return rows


def write(rows: list[dict], out: Path, tag: str, device: torch.device, started: str, rounds: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"training_{tag}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    r0 = rows[0]
    lines = [
        f"# PGD-AT, one epoch ({r0['samples']} samples, batch {r0['batch']}, PGD-{r0['pgd_steps']}), end to end",
        "",
        *run_header(started, device),
        f"- {rounds} interleaved rounds after one warm-up, each from the same initial weights; median and IQR.",
        f"- Correctness: one step of ours vs the pure-PyTorch step from the same start: max weight difference "
        f"{r0['one_step_max_weight_diff']:.2e}.",
        "- `limit` = per batch K x (forward + input-gradient) + (forward + backward + SGD step), measured here.",
        "",
        "| model | input | impl | median (s) | IQR (s) | / limit | vs pytorch_loop |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {r['impl']} | {r['median_s']:.3f} | {r['iqr_s']:.3f} | "
                     f"{r['ratio_to_limit']:.3f} | {r['speedup_vs_pytorch_loop']:.2f}x |")
    ours_row = next(r for r in rows if r["impl"] == "nonrobust_ext")
    within = ours_row["ratio_to_limit"] <= 1.15
    faster = ours_row["speedup_vs_pytorch_loop"] > 1.0
    lines += [
        "", "## Targets (computed from the table)", "",
        f"- within 1.15x of the limit: **{'MET' if within else 'NOT MET'}** ({ours_row['ratio_to_limit']:.3f}x)",
        f"- faster than the pure-PyTorch loop: **{'MET' if faster else 'NOT MET'}** "
        f"({ours_row['speedup_vs_pytorch_loop']:.2f}x)", "",
    ]
    (out / f"training_{tag}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a small epoch, 1 round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    case = Case(samples=256, batch=64, steps=3) if args.quick else Case()
    rounds = 1 if args.quick else args.rounds
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    write(run(case, device, rounds), args.out, args.tag or device.type, device, started, rounds)


if __name__ == "__main__":
    main()
