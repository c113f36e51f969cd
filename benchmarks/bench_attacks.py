"""PGD-10 (L-inf) end to end: nonrobust_ext.pgd against what users would write or pick instead.

Implementations, all from the same start (no random start, so the algorithms are identical):

``nonrobust_ext``   ``nonrobust_ext.pgd(model, x, y, eps, alpha, steps, random_start=False)``
``pytorch_loop``    a pure-PyTorch loop written the way the study's code does it: ``loss.backward()``
                    (parameter gradients included), then separate sign/add/clamp ops
``torchattacks``    ``torchattacks.PGD(..., random_start=False)``
``foolbox``         ``foolbox.attacks.LinfPGD(abs_stepsize=alpha, random_start=False)``
``nonrobust_ext_bf16``  the same with ``amp=torch.bfloat16`` (model under autocast, fp32 state and step)
``nonrobust_ext_early_stop``  fp32 with ``early_stop=True``: less work, not the same algorithm; a sample
                    leaves the batch at the step that fools it (what an evaluation needs; robust
                    accuracy can only fall, as each fooled sample keeps its fooling point)
``limit``           10 x (model forward + input-gradient backward) in fp32, measured in the same run:
                    what any fp32 PGD-10 must spend; ``ratio_to_limit`` = time / limit

On CUDA two more rows (not on CPU, where CUDA graphs do not exist and channels_last is slower):

``nonrobust_ext_fast``  ``amp=torch.bfloat16``, channels_last model and input, ``cuda_graph=True``
``limit_fast``      the limit in that same precision and layout: bf16 autocast, channels_last

Two rows only other suites pick (bench_efficientnet.py; channels_last does not pay for these small models):

``nonrobust_ext_channels_last``  fp32, channels_last model and input
``limit_channels_last``  the limit on that channels_last model and input

A ``Case`` with ``random_start=True`` starts every implementation at the same random point, the one
torchattacks draws itself (``x + U(-eps, eps)`` clipped to [0, 1], from torch's generator seeded with
``Case.seed``): ours gets it as ``x_init``, the plain loop as its start (foolbox cannot take it).

Correctness first: every implementation's adversarial batch is compared with nonrobust_ext's (max
abs difference, and the robust accuracy of each) before any timing is reported; that call is also
each implementation's warm-up (the limits get one of their own). Timing: each implementation runs
``--rounds`` times, interleaved with the others (drift on a shared machine hits them alike); the
median and the interquartile range are reported.

Run:  python benchmarks/bench_attacks.py [--quick] [--models small_cnn,resnet18] [--device cuda]
Out:  benchmarks/results/attacks_<tag>.csv and .md (machine, torch, git commit, command, the table
      and whether each target holds, computed from the numbers), and attacks_<tag>.png (time / limit
      per implementation and model) when matplotlib is installed (the `bench` extra).
"""

from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

import nonrobust_ext

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import RESULTS, device_name, git_commit, run_header, summarise, timed  # noqa: E402
from _models import INPUT_SHAPES, MODELS  # noqa: E402


@dataclass(frozen=True)
class Case:
    model: str
    batch: int
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    max_rounds: int = 100  # big models get fewer rounds so the CPU suite stays under 10 minutes
    random_start: bool = False  # all implementations start at start_point(x, case), not at x
    seed: int = 0  # of that random start


CPU_CASES = [Case("mnist_cnn", 256), Case("small_cnn", 256), Case("resnet18", 32, max_rounds=3)]
GPU_CASES = [Case("mnist_cnn", 1024), Case("small_cnn", 1024), Case("resnet18", 256), Case("resnet50", 64)]


def start_point(x: torch.Tensor, c: Case) -> torch.Tensor:
    """The random start of a ``random_start`` case: torchattacks' own draw from torch's generator
    seeded with ``c.seed``, so every implementation starts where torchattacks does (drawn in the
    contiguous layout, so a channels_last ``x`` gets the same point)."""
    torch.manual_seed(c.seed)
    noise = torch.empty_like(x, memory_format=torch.contiguous_format).uniform_(-c.eps, c.eps)
    return (x + noise).clamp(0, 1)


def _pgd(model, x, y, c: Case, **options) -> torch.Tensor:
    """nonrobust_ext.pgd from x, or from the case's random start (drawn inside, as torchattacks does)."""
    return nonrobust_ext.pgd(model, x, y, eps=c.eps, alpha=c.alpha, steps=c.steps, random_start=False,
                             x_init=start_point(x, c) if c.random_start else None, **options)


def ours_bf16(model, x, y, c: Case) -> torch.Tensor:
    return _pgd(model, x, y, c, amp=torch.bfloat16)


def ours_early_stop(model, x, y, c: Case) -> torch.Tensor:
    return _pgd(model, x, y, c, early_stop=True)


def pytorch_loop(model, x, y, c: Case, start: torch.Tensor | None = None) -> torch.Tensor:
    """PGD as research code usually writes it (from ``start``, default ``x`` or the case's random start)."""
    if start is None and c.random_start:
        start = start_point(x, c)
    x_adv = (x if start is None else start).clone().detach()
    for _ in range(c.steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()
        x_adv = x_adv.detach() + c.alpha * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - c.eps), x + c.eps).clamp(0, 1)
    return x_adv


def ours(model, x, y, c: Case) -> torch.Tensor:
    return _pgd(model, x, y, c)


def torchattacks_pgd(model, x, y, c: Case) -> torch.Tensor:
    import torchattacks

    if c.random_start:
        torch.manual_seed(c.seed)  # torchattacks then draws start_point(x, c)
    return torchattacks.PGD(model, eps=c.eps, alpha=c.alpha, steps=c.steps, random_start=c.random_start)(x, y)


def foolbox_pgd(model, x, y, c: Case) -> torch.Tensor:
    import foolbox

    if c.random_start:
        raise ValueError("foolbox draws its own random start: it cannot share the case's")

    fmodel = foolbox.PyTorchModel(model, bounds=(0, 1), device=x.device)
    attack = foolbox.attacks.LinfPGD(abs_stepsize=c.alpha, steps=c.steps, random_start=False)
    _, clipped, _ = attack(fmodel, x, y, epsilons=c.eps)
    return clipped


def limit(model, x, y, c: Case) -> None:
    """The model's own cost of a K-step attack: K x (forward + gradient w.r.t. the input only)."""
    for _ in range(c.steps):
        x_req = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_req), y, reduction="sum")
        torch.autograd.grad(loss, x_req)


def ours_fast(model, x, y, c: Case) -> torch.Tensor:
    """Every speed feature on: bf16 autocast, channels_last (model and x arrive in it), CUDA graph."""
    return _pgd(model, x, y, c, amp=torch.bfloat16, cuda_graph=True)


def limit_fast(model, x, y, c: Case) -> None:
    """The limit in ours_fast's precision and layout."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        limit(model, x, y, c)


IMPLS: dict[str, Callable] = {
    "nonrobust_ext": ours,
    "nonrobust_ext_bf16": ours_bf16,
    "nonrobust_ext_early_stop": ours_early_stop,
    "pytorch_loop": pytorch_loop,
    "torchattacks": torchattacks_pgd,
    "foolbox": foolbox_pgd,
    "limit": limit,
    "nonrobust_ext_fast": ours_fast,
    "limit_fast": limit_fast,
    "nonrobust_ext_channels_last": ours,
    "limit_channels_last": limit,
}
DEFAULT_IMPLS = [name for name in IMPLS if name not in {"nonrobust_ext_channels_last", "limit_channels_last"}]
CUDA_ONLY = {"nonrobust_ext_fast", "limit_fast"}
# Rows run on the channels_last copy of model and input, each held to the limit in its own layout.
LIMIT_OF = {"nonrobust_ext_fast": "limit_fast", "limit_fast": "limit_fast",
            "nonrobust_ext_channels_last": "limit_channels_last", "limit_channels_last": "limit_channels_last"}
CHANNELS_LAST = set(LIMIT_OF)
LIMITS = {"limit", "limit_fast", "limit_channels_last"}


def run_case(c: Case, device: torch.device, rounds: int, impls: list[str], *,
             make_model: Callable[[], torch.nn.Module] | None = None,
             input_shape: tuple[int, ...] | None = None) -> list[dict]:
    """The rows of one case; the model is ``MODELS[c.model]()`` with inputs ``INPUT_SHAPES[c.model]``
    unless ``make_model`` and ``input_shape`` say otherwise."""
    torch.manual_seed(0)
    model = (make_model or MODELS[c.model])().to(device).eval()
    x = torch.rand(c.batch, *(input_shape or INPUT_SHAPES[c.model]), device=device)
    with torch.no_grad():
        y = model(x).argmax(1)  # attack the model's own predictions: clean accuracy 100%
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def call(name: str):
        return IMPLS[name](model_cl if name in CHANNELS_LAST else model, x_cl if name in CHANNELS_LAST else x, y, c)

    # Correctness first: same algorithm, same start -> the same adversarial examples.
    reference = ours(model, x, y, c)
    agreement, round_s = {}, 0.0
    for name in impls:
        if name in LIMITS:
            continue
        t0 = time.perf_counter()
        x_adv = call(name)
        round_s += time.perf_counter() - t0
        with torch.no_grad():
            acc = float((model(x_adv).argmax(1) == y).float().mean())
        agreement[name] = (acc, float((x_adv - reference).abs().max()))
        assert float((x_adv - x).abs().max()) <= c.eps + 1e-6, f"{name} left the eps-ball"
    # bf16 autocast computes other gradients and early stop keeps fooled samples where they fell, so
    # those two are compared by robust accuracy, not elementwise.

    times: dict[str, list[float]] = {name: [] for name in impls}
    for name in impls:  # warm-up of the limits; the check above was the others'
        if name in LIMITS:
            round_s += timed(lambda n=name: call(n), device)
    n_rounds = min(rounds, c.max_rounds)
    print(f"  checked; {n_rounds} timed rounds of about {round_s:.1f} s each", flush=True)
    for _ in range(n_rounds):
        for name in impls:
            times[name].append(timed(lambda n=name: call(n), device))

    stats = {n: summarise(t, method="exclusive") for n, t in times.items()}
    med = {n: s.median_s for n, s in stats.items()}
    rows = []
    for name in impls:
        acc, diff = agreement.get(name, (float("nan"), float("nan")))
        rows.append({
            "model": c.model, "batch": c.batch, "impl": name, "median_s": med[name], "iqr_s": stats[name].iqr_s,
            # The fast row is held to the limit in its own precision and layout.
            "ratio_to_limit": med[name] / med[_limit_for(name, med)] if _limit_for(name, med) else float("nan"),
            "speedup_vs_torchattacks": med["torchattacks"] / med[name] if "torchattacks" in med else float("nan"),
            "robust_accuracy": acc, "max_abs_diff_vs_nonrobust_ext": diff,
            "device": device_name(device), "torch": torch.__version__, "git": git_commit(),
        })
    return rows


def _limit_for(name: str, med: dict[str, float]) -> str | None:
    wanted = LIMIT_OF.get(name, "limit")
    return wanted if wanted in med else None


def targets(rows: list[dict], device: torch.device) -> list[str]:
    def get(model, impl, key):
        return next(r[key] for r in rows if r["model"] == model and r["impl"] == impl)

    lines = []
    if device.type == "cpu":
        checks = [
            ("resnet18", "speedup_vs_torchattacks", ">=", 1.0, "ours >= 1.0x torchattacks, CIFAR ResNet-18"),
            ("resnet18", "ratio_to_limit", "<=", 1.10, "ours within 1.10x of the limit, CIFAR ResNet-18"),
            ("small_cnn", "speedup_vs_torchattacks", ">=", 1.2, "ours >= 1.2x torchattacks, small CNN (CIFAR)"),
            ("mnist_cnn", "speedup_vs_torchattacks", ">=", 1.2, "ours >= 1.2x torchattacks, small CNN (F-MNIST)"),
        ]
        for model, key, op, bound, text in checks:
            if not any(r["model"] == model for r in rows):
                continue
            value = get(model, "nonrobust_ext", key)
            ok = value >= bound if op == ">=" else value <= bound
            lines.append(f"- {text}: **{'MET' if ok else 'NOT MET'}** ({value:.2f}x)")
    else:
        for model in sorted({r["model"] for r in rows}):
            if not any(r["model"] == model and r["impl"] == "nonrobust_ext_fast" for r in rows):
                continue
            speedup = get(model, "nonrobust_ext_fast", "speedup_vs_torchattacks")
            to_limit = get(model, "nonrobust_ext_fast", "ratio_to_limit")
            fast_acc = get(model, "nonrobust_ext_fast", "robust_accuracy")
            gap = abs(fast_acc - get(model, "torchattacks", "robust_accuracy"))
            ok = speedup >= 2.0 and gap <= 0.01
            lines.append(f"- {model}: bf16 + channels_last + CUDA graph >= 2x torchattacks fp32 at robust accuracy "
                         f"within 1 point: **{'MET' if ok else 'NOT MET'}** ({speedup:.2f}x, gap {gap:.3f})")
            lines.append(f"- {model}: within 1.15x of the limit in the same precision: "
                         f"**{'MET' if to_limit <= 1.15 else 'NOT MET'}** ({to_limit:.2f}x)")
    for model in sorted({r["model"] for r in rows}):
        if any(r["model"] == model and r["impl"] == "nonrobust_ext_bf16" for r in rows):
            value = get(model, "nonrobust_ext_bf16", "speedup_vs_torchattacks")
            lines.append(f"- {model}: with amp=torch.bfloat16, {value:.2f}x torchattacks (fp32)")
        if any(r["model"] == model and r["impl"] == "nonrobust_ext_early_stop" for r in rows):
            value = get(model, "nonrobust_ext_early_stop", "speedup_vs_torchattacks")
            lines.append(f"- {model}: with early_stop=True (fp32, fooled samples leave the batch), "
                         f"{value:.2f}x torchattacks")
    accs = {(r["model"], r["impl"]): r["robust_accuracy"] for r in rows if r["impl"] not in LIMITS}
    for model in sorted({m for m, _ in accs}):
        vals = {impl: a for (m, impl), a in accs.items() if m == model}
        spread = max(vals.values()) - min(vals.values())
        listed = ", ".join(f"{k} {v:.3f}" for k, v in vals.items())
        lines.append(f"- {model}: robust accuracy per implementation {listed} (spread {spread:.3f})")
    return lines


def write(rows: list[dict], out: Path, tag: str, device: torch.device, started: str, args) -> None:
    intro = [
        "Models: `mnist_cnn` (2 convs, 1x28x28, the study's default data size), `small_cnn` (3 convs, 3x32x32),"
        " `resnet18` (CIFAR ResNet-18); definitions in benchmarks/_models.py.",
        "",
        *run_header(started, device),
        f"- Up to {args.rounds} interleaved rounds per implementation (3 for ResNet-18 on CPU) after one warm-up;"
        " median and IQR in seconds.",
        "- Inputs: uniform random images, labels = the model's own predictions (clean accuracy 1.0),"
        " untrained models with fixed seeds; all implementations start at x (no random start).",
        "- `limit` = 10 x (forward + input-gradient) of the model: the floor for any PGD-10.",
    ]
    report(rows, out, f"attacks_{tag}", "PGD-10 (L-inf, eps 8/255, alpha 2/255) end to end", intro,
           targets(rows, device), device_name(device))


def report(rows: list[dict], out: Path, stem: str, title: str, intro: list[str], target_lines: list[str],
           machine: str) -> None:
    """``<stem>.csv`` (the rows), ``<stem>.md`` (title, intro, table, targets) and ``<stem>.png`` under
    ``out``; prints the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# {title}",
        "",
        *intro,
        "",
        "| model | batch | impl | median (s) | IQR (s) | / limit | vs torchattacks | robust acc | max diff vs ours |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['impl']} | {r['median_s']:.4f} | {r['iqr_s']:.4f} | "
            f"{r['ratio_to_limit']:.3f} | {r['speedup_vs_torchattacks']:.2f}x | {r['robust_accuracy']:.3f} | "
            f"{r['max_abs_diff_vs_nonrobust_ext']:.2e} |"
        )
    lines += ["", "## Targets (computed from the table)", "", *target_lines, ""]
    if plot(rows, out / f"{stem}.png", machine):
        lines += [f"![time / limit per implementation]({stem}.png)", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def plot(rows: list[dict], path: Path, machine: str) -> bool:
    """Grouped bars of time / limit per model and implementation; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[bench]'): no plot", file=sys.stderr)
        return False
    models = list(dict.fromkeys(r["model"] for r in rows))
    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i not in LIMITS]
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(3.6 + 1.6 * len(models), 3.6))
    for k, impl in enumerate(impls):
        values = [next((r["ratio_to_limit"] for r in rows if r["model"] == m and r["impl"] == impl), float("nan"))
                  for m in models]
        ax.bar([i + (k - (len(impls) - 1) / 2) * width for i in range(len(models))], values, width, label=impl)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("time / limit (lower is faster)")
    ax.set_title(f"PGD-10 end to end\n{machine}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, small CNN only, small batch")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    if args.models:
        wanted = set(args.models.split(","))
        cases = [c for c in cases if c.model in wanted]
    if args.quick:
        args.rounds = 2
        cases = [Case("mnist_cnn", 64)]
    impls = [name for name in DEFAULT_IMPLS if device.type == "cuda" or name not in CUDA_ONLY]
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    for c in cases:
        print(f"{c.model} batch {c.batch} ...", flush=True)
        rows += run_case(c, device, args.rounds, impls)
    write(rows, args.out, args.tag or device.type, device, started, args)


if __name__ == "__main__":
    main()
