"""AutoAttack (standard, L-inf, eps 8/255) end to end: nonrobust_ext.autoattack against torchattacks'
AutoAttack, on adversarially trained Fashion-MNIST models, with the model-only limit of our run.

AutoAttack spends its time on the points that stay robust (each later stage runs only on those), so a
benchmark on a model with 0% robust accuracy measures nothing but APGD-CE. Both models are therefore
trained here, on real Fashion-MNIST (``nonrobust_ext.data.fashion_mnist``: ``$NONROBUST_EXT_DATA`` or
/usr/share/datasets/fashion-mnist), with PGD adversarial training at the benchmark's eps, for a fixed
wall-clock budget, seeded:

``mnist_cnn``           benchmarks/_models.py's 2-conv CNN, trained from scratch (``--cnn-train-s``,
                        default 60 s), PGD-3 adversarial training on half of each batch
``efficientnet_lite0``  the study's backbone, ``models.create("efficientnet_lite0", num_classes=10,
                        pretrained="imagenet", input_size=32)``, fine-tuned the same way
                        (``--lite0-train-s``, default 120 s), channels_last on CPU (as the study builds
                        it there) for the fine-tuning and both attacks. torchattacks attacks the same model object.

Rows per case (the first N test images; clean-misclassified ones count as non-robust for both):

``nonrobust_ext``  ``autoattack(model, x, y, eps=8/255, version="standard", seed=0)``: steps 100, 9
                   target classes, 5000 queries, batch_size 256; per-stage times from its log
``torchattacks``   ``torchattacks.AutoAttack(model, norm="Linf", eps=8/255, version="standard",
                   n_classes=10, seed=0)`` with ``steps = 100`` set on its APGD, APGD-T and FAB
                   components: its constructor leaves them at their class default, 10 steps, not
                   the standard budget of Croce & Hein (100); per-stage times by timing each
                   component's ``forward`` as its MultiAttack calls it (a wrapper, no extra work)
``torchattacks_steps10``  the same as shipped (10 steps for APGD, APGD-T, FAB; Square 5000 queries)
``nonrobust_ext_steps10`` ours with ``steps=10``: the budget of the row above, its speedup is over it
``limit``          the model's own cost of the work ours did: ours runs on a counting wrapper that
                   records the batch size of every model call, with and without autograd; after the
                   run each distinct size is timed (forward + input gradient, and forward alone, in
                   the same layout) and the calls are summed. ``/ limit`` = ours / that sum.

Each implementation runs once, timed (AutoAttack is long), after a tiny warm-up on 4 images. Robust
accuracy is recomputed from each returned batch (model prediction, eps-ball and bounds checked), not
taken from the attack's own report.

Run:  python benchmarks/bench_autoattack.py [--device cpu|cuda] [--n-cnn 100] [--n-lite0 30] [--threads 1] [--quick]
Out:  benchmarks/results/autoattack_<tag>.md / .csv (tag: the device type, or --tag; ``_quick``
      appended with --quick, so a dry run never overwrites a real result)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import nonrobust_ext
from nonrobust_ext import data, models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import (  # noqa: E402
    RESULTS,
    cpu_features,
    load_average,
    load_warning,
    open_device,
    provenance_header,
    sync,
    timed,
    write_csv,
)
from _models import mnist_cnn  # noqa: E402

EPS = 8 / 255
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
# The components of torchattacks' standard AutoAttack, in its order, under our stage names.
TA_STAGES = dict(zip(("APGD", "APGDT", "FAB", "Square"), STAGES, strict=True))
FIELDS = ["case", "impl", "n", "seconds", "clean_accuracy", "robust_accuracy", *(f"{s}_s" for s in STAGES),
          "grad_samples", "forward_samples", "speedup_vs_torchattacks", "ratio_to_limit", "device", "git"]


class CallRecorder(torch.nn.Module):
    """Passes calls through to ``model`` and counts them by batch size, with and without autograd."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_grad: Counter[int] = Counter()
        self.without_grad: Counter[int] = Counter()
        self.copies: list[CallRecorder] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (self.with_grad if torch.is_grad_enabled() else self.without_grad)[x.shape[0]] += 1
        return self.model(x)

    def __deepcopy__(self, memo: dict) -> CallRecorder:
        # autoattack attacks a channels-last copy of the model: the copy's calls count here too, and
        # `copies` keeps it so that the limit is timed on the model that ran.
        twin = CallRecorder(copy.deepcopy(self.model, memo))
        twin.with_grad, twin.without_grad = self.with_grad, self.without_grad
        self.copies.append(twin)
        return twin


# --------------------------------------------------------------------------------------------------
# models


def adversarial_training(model: torch.nn.Module, train: data.TensorData, seconds: float, *, batch: int, lr: float,
                         device: torch.device, seed: int = 0) -> dict:
    """PGD-3 (L-inf, eps 8/255) adversarial training for ``seconds`` of wall clock: each batch is half
    clean, half adversarial (a pure adversarial loss on a 1-minute budget tends to collapse to a
    constant prediction; the mix keeps clean accuracy while buying robustness)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    start, steps, seen = time.perf_counter(), 0, 0
    model.train()
    while time.perf_counter() - start < seconds:
        order = torch.randperm(len(train.y), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            if time.perf_counter() - start >= seconds:
                break
            idx = order[i:i + batch]
            x, y = train.x[idx].to(device), train.y[idx].to(device)
            half = batch // 2
            # pgd runs the model in eval mode and restores train mode: BatchNorm statistics come from
            # the training step only.
            x_adv = nonrobust_ext.pgd(model, x[half:], y[half:], eps=EPS, alpha=EPS / 2, steps=3,
                                      seed=seed * 100003 + steps)
            loss = F.cross_entropy(model(torch.cat([x[:half], x_adv])), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            seen += batch
    model.eval().requires_grad_(False)
    return {"seconds": time.perf_counter() - start, "steps": steps, "samples": seen}


def make_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return mnist_cnn()


def make_lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("efficientnet_lite0", num_classes=10, pretrained="imagenet", input_size=32)


# --------------------------------------------------------------------------------------------------
# the attacks


def robust_accuracy(model: torch.nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction still classified correctly at ``x_adv``; raises when a point leaves the eps-ball or
    [0, 1] (a point outside cannot count as an attack)."""
    dist = (x_adv - x).abs().flatten(1).amax(1)
    if float(dist.max()) > EPS * (1 + 1e-5) + 1e-7 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        raise RuntimeError(f"an adversarial point is outside the eps-ball or [0, 1] (max distance {float(dist.max())})")
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def run_ours(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
             warm_up: bool = False, steps: int = 100) -> tuple[dict, CallRecorder]:
    recorder = CallRecorder(model)
    budget = {"steps": 2, "queries": 10} if warm_up else {"steps": steps}
    sync(device)
    t0 = time.perf_counter()
    r = nonrobust_ext.autoattack(recorder, x, y, eps=EPS, norm="linf", version="standard", seed=0,
                                 return_result=True, **budget)
    sync(device)
    seconds = time.perf_counter() - t0
    stage_s = {s.attack: s.seconds for s in r.log}
    return {"seconds": seconds, "x_adv": r.x_adv, "stages": stage_s, "reported_robust": r.robust_accuracy,
            "clean": r.clean_accuracy, "channels_last": r.settings["channels_last"]}, recorder


def run_torchattacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, *,
                     warm_up: bool = False, steps: int | None = 100) -> dict:
    """torchattacks' standard AutoAttack; ``steps`` (when not None) set on its APGD, APGD-T and FAB
    components: its constructor leaves them at their own default, 10, not the standard 100."""
    import torchattacks

    if warm_up:  # its components with tiny budgets: AutoAttack's constructor fixes the standard one
        for atk in (torchattacks.APGD(model, eps=EPS, steps=2), torchattacks.APGDT(model, eps=EPS, steps=2),
                    torchattacks.FAB(model, eps=EPS, steps=2, multi_targeted=True, n_classes=10),
                    torchattacks.Square(model, eps=EPS, n_queries=10)):
            atk(x, y)
        return {}
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    stage_s = dict.fromkeys(STAGES, 0.0)
    for component in attack._autoattack.attacks:
        name = TA_STAGES[type(component).__name__]
        if steps is not None and name != "square":
            component.steps = steps  # read at each run (its step-size schedule is derived from it there)
        component.forward = _timed_forward(component.forward, name, stage_s, device)
    sync(device)
    t0 = time.perf_counter()
    x_adv = attack(x, y)
    sync(device)
    return {"seconds": time.perf_counter() - t0, "x_adv": x_adv, "stages": stage_s}


def _timed_forward(forward: Callable, name: str, into: dict[str, float], device: torch.device) -> Callable:
    def wrapped(*args, **kwargs):
        sync(device)
        t0 = time.perf_counter()
        out = forward(*args, **kwargs)
        sync(device)
        into[name] += time.perf_counter() - t0
        return out

    return wrapped


def limit_seconds(model: torch.nn.Module, recorder: CallRecorder, sample: torch.Tensor, device: torch.device) -> float:
    """The model's time for the calls ``recorder`` saw. The stages shrink their batches as points fall
    (hundreds of distinct sizes), so the model is timed at powers of two up to the largest size and at
    every size that makes up at least 1% of the calls (median of 3 calls; forward + input gradient for
    the autograd calls, forward alone for the others), and each other call's time is interpolated
    linearly between the two nearest. The frequent sizes are timed as they are because a call's time is
    only roughly affine in its batch size (the kernels chosen change with the shape): Square's 5000
    queries at one or two sizes dominate, and interpolating Lite0's forward between 8 and 16 rows put
    it 5-13% above its measured time at 11 and 12 rows."""
    def per_call(size: int, grad: bool) -> float:
        xb = sample.expand(size, *sample.shape[1:]).clone(memory_format=torch.preserve_format)
        xb = xb + 0.01 * torch.rand_like(xb)

        def once() -> None:
            if grad:
                xg = xb.clone().requires_grad_(True)
                torch.autograd.grad(model(xg).logsumexp(1).sum(), xg)
            else:
                with torch.no_grad():
                    model(xb)

        once()
        return sorted(timed(once, device) for _ in range(3))[1]

    total = 0.0
    for counts, grad in ((recorder.with_grad, True), (recorder.without_grad, False)):
        if not counts:
            continue
        top = max(counts)
        frequent = {size for size, calls in counts.items() if calls >= 0.01 * sum(counts.values())}
        grid = sorted({2**k for k in range(top.bit_length()) if 2**k < top} | {top} | frequent)
        at = {size: per_call(size, grad) for size in grid}
        for size, calls in counts.items():
            hi = next(g for g in grid if g >= size)
            lo = max((g for g in grid if g <= size), default=hi)
            t = at[lo] if hi == lo else at[lo] + (at[hi] - at[lo]) * (size - lo) / (hi - lo)
            total += calls * t
    return total


# --------------------------------------------------------------------------------------------------
# one case


def run_case(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             git: str, machine: str) -> list[dict]:
    print(f"{name}: N={len(y)}; warm-up ...", flush=True)
    run_ours(model, x[:4], y[:4], device, warm_up=True)
    run_torchattacks(model, x[:4], y[:4], device, warm_up=True)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())

    print(f"{name}: ours ...", flush=True)
    ours, recorder = run_ours(model, x, y, device)
    ours_acc = robust_accuracy(model, ours["x_adv"], x, y)
    print(f"  {ours['seconds']:.1f} s, robust {ours_acc:.3f} (reported {ours['reported_robust']:.3f}), "
          + ", ".join(f"{k} {v:.1f} s" for k, v in ours["stages"].items()), flush=True)
    print(f"{name}: torchattacks ...", flush=True)
    ta = run_torchattacks(model, x, y, device)
    ta_acc = robust_accuracy(model, ta["x_adv"], x, y)
    print(f"  {ta['seconds']:.1f} s, robust {ta_acc:.3f}, "
          + ", ".join(f"{k} {v:.1f} s" for k, v in ta["stages"].items()), flush=True)
    # Ours attacks a channels-last copy of a CPU conv model (autoattack's channels_last default). The same
    # copy handed to torchattacks by hand shows how much of the gap is that layout and how much the rest.
    layout = ours["channels_last"]
    ta_cl = None
    if layout:
        print(f"{name}: torchattacks on the model converted to channels-last by hand ...", flush=True)
        by_hand = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ta_cl = run_torchattacks(by_hand, x, y, device)
        ta_cl_acc = robust_accuracy(model, ta_cl["x_adv"], x, y)
        print(f"  {ta_cl['seconds']:.1f} s, robust {ta_cl_acc:.3f}", flush=True)
    print(f"{name}: torchattacks as shipped (10 steps) ...", flush=True)
    ta10 = run_torchattacks(model, x, y, device, steps=None)
    ta10_acc = robust_accuracy(model, ta10["x_adv"], x, y)
    print(f"  {ta10['seconds']:.1f} s, robust {ta10_acc:.3f}", flush=True)
    print(f"{name}: ours with 10 steps ...", flush=True)
    ours10, _ = run_ours(model, x, y, device, steps=10)
    ours10_acc = robust_accuracy(model, ours10["x_adv"], x, y)
    print(f"  {ours10['seconds']:.1f} s, robust {ours10_acc:.3f}", flush=True)
    print(f"{name}: limit ...", flush=True)
    runner = recorder.copies[-1].model if recorder.copies else model  # the model the attacks ran on
    lim = limit_seconds(runner, recorder, x[:1], device)
    grad_samples = sum(s * c for s, c in recorder.with_grad.items())
    fwd_samples = sum(s * c for s, c in recorder.without_grad.items())
    print(f"  {lim:.1f} s for {grad_samples} forward+gradient and {fwd_samples} forward-only sample passes",
          flush=True)

    nan = float("nan")
    rows = []
    runs = [("nonrobust_ext", ours, ours_acc, ta), ("torchattacks", ta, ta_acc, ta)]
    if ta_cl is not None:
        runs.append(("torchattacks_channels_last", ta_cl, ta_cl_acc, ta))
    runs += [("torchattacks_steps10", ta10, ta10_acc, ta10), ("nonrobust_ext_steps10", ours10, ours10_acc, ta10)]
    for impl, res, acc, versus in runs:
        rows.append({
            "case": name, "impl": impl, "n": len(y), "seconds": res["seconds"], "clean_accuracy": clean,
            "robust_accuracy": acc, **{f"{s}_s": res["stages"].get(s, nan) for s in STAGES},
            "grad_samples": grad_samples if impl == "nonrobust_ext" else "",
            "forward_samples": fwd_samples if impl == "nonrobust_ext" else "",
            "speedup_vs_torchattacks": versus["seconds"] / res["seconds"],
            "ratio_to_limit": res["seconds"] / lim if impl == "nonrobust_ext" else nan,
            "device": machine, "git": git,
        })
    rows.append({
        "case": name, "impl": "limit", "n": len(y), "seconds": lim, "clean_accuracy": nan, "robust_accuracy": nan,
        **{f"{s}_s": nan for s in STAGES}, "grad_samples": grad_samples, "forward_samples": fwd_samples,
        "speedup_vs_torchattacks": ta["seconds"] / lim, "ratio_to_limit": 1.0, "device": machine, "git": git,
    })
    return rows


# --------------------------------------------------------------------------------------------------
# report


def targets(rows: list[dict]) -> list[str]:
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        row = {r["impl"]: r for r in rows if r["case"] == case}
        ours, ta = row["nonrobust_ext"], row["torchattacks"]
        gap = abs(ours["robust_accuracy"] - ta["robust_accuracy"])
        speedup = ours["speedup_vs_torchattacks"]
        ok = speedup >= 2.0 and gap <= 0.01 + 1e-9
        lines.append(f"- {case}: ours >= 2x torchattacks at robust accuracy within 1 point: "
                     f"**{'MET' if ok else 'NOT MET'}** ({speedup:.2f}x; robust accuracy ours "
                     f"{ours['robust_accuracy']:.3f}, torchattacks {ta['robust_accuracy']:.3f}, gap {gap:.3f})")
        if ta["robust_accuracy"] == 0.0:
            lines.append(f"- {case}: robust accuracy 0: only APGD-CE ran, the later stages (where AutoAttack spends "
                         "its time) were not exercised: this speedup says little")
        if "torchattacks_channels_last" in row:
            by_hand = row["torchattacks_channels_last"]
            lines.append(f"- {case}: ours ran on a channels-last copy of the model (autoattack's CPU default); "
                         f"torchattacks handed that layout by hand: {by_hand['seconds']:.1f} s "
                         f"(ours {by_hand['seconds'] / ours['seconds']:.2f}x its speed)")
        lines.append(f"- {case}: ours / limit = {ours['ratio_to_limit']:.2f}x (limit {row['limit']['seconds']:.1f} s, "
                     f"timed on the model ours ran: at the limit ours would be "
                     f"{ta['seconds'] / row['limit']['seconds']:.2f}x torchattacks)")
        o10, t10 = row["nonrobust_ext_steps10"], row["torchattacks_steps10"]
        lines.append(f"- {case}, at torchattacks' shipped budget (10 steps): ours "
                     f"{o10['speedup_vs_torchattacks']:.2f}x "
                     f"torchattacks; robust accuracy ours {o10['robust_accuracy']:.3f}, torchattacks "
                     f"{t10['robust_accuracy']:.3f}")
    return lines


def fmt(v: object, spec: str = ".1f") -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else format(v, spec)
    return str(v) if v != "" else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--cases", nargs="+", choices=["mnist_cnn", "efficientnet_lite0"],
                        default=["mnist_cnn", "efficientnet_lite0"])
    parser.add_argument("--n-cnn", type=int, default=None, help="test images for mnist_cnn (default 100, quick 50)")
    parser.add_argument("--n-lite0", type=int, default=None,
                        help="test images for efficientnet_lite0 (default 30, quick 10)")
    parser.add_argument("--cnn-train-s", type=float, default=None, help="training seconds (default 60, quick 10)")
    parser.add_argument("--lite0-train-s", type=float, default=None,
                        help="fine-tuning seconds (default 120, quick 15)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="a dry run: fewer images, shorter training")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None, help="file suffix (default: the device type; _quick added by --quick)")
    args = parser.parse_args()
    device = open_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    # Sized so that the whole run stays under ~25 min on 2 busy CPU cores (Square's 5000 queries on
    # every robust point dominate).
    n_cnn = args.n_cnn or (50 if q else 100)
    n_lite0 = args.n_lite0 or (10 if q else 30)
    cnn_s = args.cnn_train_s if args.cnn_train_s is not None else (10.0 if q else 60.0)
    lite0_s = args.lite0_train_s if args.lite0_train_s is not None else (15.0 if q else 120.0)
    tag = (args.tag or device.type) + ("_quick" if q else "")

    from _env import device_name, git_commit

    git, machine = git_commit(), device_name(device)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    load0 = load_average()
    print(f"device={machine}  git={git}  load={load0}", flush=True)
    train, test = data.fashion_mnist(train=True), data.fashion_mnist(train=False)
    training_notes, rows = [], []
    for case in args.cases:
        if case == "mnist_cnn":
            model, n, secs, batch, lr = make_cnn().to(device), n_cnn, cnn_s, 128, 1e-3
        else:
            model, n, secs, batch, lr = make_lite0().to(device), n_lite0, lite0_s, 64, 1e-3
        print(f"{case}: adversarial training for {secs:.0f} s ...", flush=True)
        if case == "efficientnet_lite0" and device.type == "cpu":
            # The study's CPU layout; it also makes the fine-tuning about 3x faster here.
            model = model.to(memory_format=torch.channels_last)
        info = adversarial_training(model, train, secs, batch=batch, lr=lr, device=device)
        x, y = test.x[:n].to(device), test.y[:n].to(device)
        training_notes.append(f"- {case}: PGD-3 adversarial training (half of each batch adversarial, eps 8/255, "
                              f"Adam lr {lr:g}, batch {batch}) for {info['seconds']:.0f} s: {info['steps']} steps, "
                              f"{info['samples']} samples"
                              + ("; channels_last" if case == "efficientnet_lite0" and device.type == "cpu"
                                 else ""))
        rows += run_case(case, model, x, y, device, git, machine)
    load1 = load_average()

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"autoattack_{tag}"
    write_csv(args.out / f"{stem}.csv", rows, FIELDS)
    build = nonrobust_ext.build_info()
    lines = [
        "# AutoAttack (standard, L-inf, eps 8/255): nonrobust_ext vs torchattacks", "",
        "Standard budget for both: APGD-CE 100 steps, APGD-T 9 targets x 100 steps, FAB-T 9 targets x 100 steps,"
        " Square 5000 queries; seed 0. Inputs: the first N Fashion-MNIST test images, true labels.", "",
        *provenance_header(started, device, torch.get_num_threads(),
                           {k: build.get(k) for k in ("cpu_isa", "build_type", "with_cuda")},
                           nonrobust_ext.__version__, load0, load1),
        f"- CPU features: {cpu_features()}",
        *load_warning(load0),
        *training_notes,
        "- One timed run per implementation after a tiny warm-up (4 images, small budgets); seconds of wall clock."
        " Robust accuracy recomputed from each returned batch (eps-ball and [0, 1] checked).",
        "- `limit`: the model's own time for the calls ours made (counted by batch size, with / without autograd,"
        " re-timed after the run as forward + input gradient or forward alone at powers of two and at every size"
        " with 1% of the calls, interpolated in between), on the model ours ran (its channels-last copy where"
        " autoattack made one).",
        "- torchattacks per-stage times: each component attack's `forward` timed as its MultiAttack calls it."
        " torchattacks also attacks the clean-misclassified points; ours does not (they are non-robust either way).",
        "",
        "| case | N | impl | seconds | clean acc | robust acc | APGD-CE s | APGD-T s | FAB-T s | Square s |"
        " fwd+grad samples | fwd samples | vs torchattacks | / limit |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n']} | {r['impl']} | {fmt(r['seconds'])} | {fmt(r['clean_accuracy'], '.3f')} | "
            f"{fmt(r['robust_accuracy'], '.3f')} | " + " | ".join(fmt(r[f'{s}_s']) for s in STAGES)
            + f" | {fmt(r['grad_samples'])} | {fmt(r['forward_samples'])} | "
            f"{fmt(r['speedup_vs_torchattacks'], '.2f')}x | {fmt(r['ratio_to_limit'], '.2f')} |")
    lines += ["", "## Targets (computed from the table)", "", *targets(rows), ""]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
