"""PGD-10 (L-inf) on EfficientNet-Lite0, the study's model: ours, torchattacks, a plain PyTorch loop and
the model-only limit, in one run.

The model is the study's: ``nonrobust_ext.models.create("efficientnet_lite0", num_classes=10,
pretrained="imagenet", input_size=S)`` (ImageNet backbone, new 10-class head), in eval mode with
``requires_grad_(False)``; it takes Fashion-MNIST-shaped batches (grey 1x28x28 in [0, 1]), resizes them
to S px and repeats the grey channel to RGB inside. Two cases:

- the study's resolution, ``--study-size`` px (default 32), batch 128;
- ImageNet's 224 px, batch 16.

Rows (implementations from bench_attacks.py, eps 8/255, alpha 2/255, 10 steps, all from the same
random start, the one torchattacks draws itself):

``nonrobust_ext``                ours, fp32
``nonrobust_ext_channels_last``  ours, fp32, model in channels_last (``model.to(memory_format=...)``)
``nonrobust_ext_bf16``           ours with ``amp=torch.bfloat16``; only where the device computes bf16
                                 natively (AVX512_BF16 / AMX on CPU; ``--bf16 on|off`` overrides)
``nonrobust_ext_early_stop``     ours with ``early_stop=True``: fooled samples leave the batch, so it
                                 does less work than the others (not the same algorithm)
``torchattacks``                 ``torchattacks.PGD(eps, alpha, steps=10, random_start=True)``
``pytorch_loop``                 the loop research code writes (``loss.backward()``, sign, clamp)
``limit``, ``limit_channels_last``  10 x (forward + input gradient) in fp32, contiguous / channels_last

Checks, timing and report are bench_attacks.py's (``run_case``, ``report``): adversarial examples
compared with ours before timing, interleaved rounds after a warm-up, medians and IQR.

Run:  python benchmarks/bench_efficientnet.py [--rounds 5] [--study-size 32] [--quick]
Out:  benchmarks/results/attacks_efficientnet_<tag>.md / .csv / .png (tag: the device type, or --tag;
      ``_quick`` appended with --quick, so a dry run never overwrites a real result)
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import torch

from nonrobust_ext import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import (  # noqa: E402
    RESULTS,
    bf16_native,
    cpu_features,
    device_name,
    load_average,
    load_warning,
    run_header,
)
from bench_attacks import Case, report, run_case, targets  # noqa: E402

IMPLS = ["nonrobust_ext", "nonrobust_ext_channels_last", "nonrobust_ext_bf16", "nonrobust_ext_early_stop",
         "torchattacks", "pytorch_loop", "limit", "limit_channels_last"]
INPUT_SHAPE = (1, 28, 28)  # Fashion-MNIST
FP32_SAME = ["nonrobust_ext_channels_last", "torchattacks", "pytorch_loop"]  # must give ours' examples
TOLERANCE = 1e-6


def lite0(size: int):
    def make() -> torch.nn.Module:
        model = models.create("efficientnet_lite0", num_classes=10, pretrained="imagenet", input_size=size)
        return model.eval().requires_grad_(False)

    return make


def lite0_targets(rows: list[dict]) -> list[str]:
    """Ours against torchattacks and the limit, what channels_last buys, and the equality check."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        row = {r["impl"]: r for r in rows if r["model"] == model}
        for name, what in (("nonrobust_ext", "fp32"), ("nonrobust_ext_channels_last", "fp32 channels_last")):
            if name in row:
                lines.append(f"- {model}: ours {what}: {row[name]['speedup_vs_torchattacks']:.2f}x torchattacks, "
                             f"{row[name]['ratio_to_limit']:.2f}x its limit")
        if "limit" in row and "limit_channels_last" in row:
            lines.append(f"- {model}: channels_last makes the limit itself "
                         f"{row['limit']['median_s'] / row['limit_channels_last']['median_s']:.2f}x faster")
        diffs = {n: row[n]["max_abs_diff_vs_nonrobust_ext"] for n in FP32_SAME if n in row}
        worst = max(diffs.values(), default=0.0)
        lines.append(f"- {model}: fp32 implementations give ours' adversarial examples (max abs diff <= "
                     f"{TOLERANCE:g}): **{'MET' if worst <= TOLERANCE else 'NOT MET'}** ("
                     + ", ".join(f"{n} {d:.2e}" for n, d in diffs.items()) + ")")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (default 5)")
    parser.add_argument("--study-size", type=int, default=32, help="the study's input size in px (default 32)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="the amp=torch.bfloat16 row: auto = where the device computes bf16 natively")
    parser.add_argument("--quick", action="store_true", help="a dry run: batches 16 and 2, one round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default=None, help="file suffix (default: the device type; _quick added by --quick)")
    args = parser.parse_args()
    if args.study_size == 224:
        parser.error("--study-size 224 is the second case already")
    device = torch.device(args.device)
    tag = (args.tag or device.type) + ("_quick" if args.quick else "")
    if args.quick:
        args.rounds = 1
    batches = (16, 2) if args.quick else (128, 16)
    cases = [(Case(f"efficientnet_lite0_{size}px", batch, random_start=True), size)
             for size, batch in zip((args.study_size, 224), batches, strict=True)]
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and bf16_native(device))
    impls = [name for name in IMPLS if bf16 or name != "nonrobust_ext_bf16"]

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    load0 = load_average()
    rows = []
    for c, size in cases:
        print(f"{c.model} batch {c.batch} ...", flush=True)
        rows += run_case(c, device, args.rounds, impls, make_model=lite0(size), input_shape=INPUT_SHAPE)
    load1 = load_average()

    loads = (f"{'/'.join(f'{v:.2f}' for v in load0)} / {'/'.join(f'{v:.2f}' for v in load1)}"
             if load0 and load1 else "n/a")
    intro = [
        "Model: EfficientNet-Lite0 with its ImageNet weights and a new 10-class head "
        "(`nonrobust_ext.models.create('efficientnet_lite0', num_classes=10, pretrained='imagenet', input_size=S)`),"
        " eval mode, parameters frozen; it resizes the 1x28x28 grey input to S px and repeats it to RGB inside.",
        "",
        *run_header(started, device),
        f"- CPU features: {cpu_features()}",
        f"- Load average (1/5/15 min) at start / end: {loads}",
        *load_warning(load0),
        f"- {args.rounds} interleaved timed rounds per implementation after a warm-up; median and IQR in seconds.",
        "- Inputs: uniform random Fashion-MNIST-shaped images (1x28x28), labels = the model's own predictions"
        " (clean accuracy 1.0), fixed seeds; every implementation starts at the same random point"
        " (torchattacks' own draw, x + U(-eps, eps) clipped to [0, 1]).",
        "- `limit` = 10 x (forward + input gradient), fp32; `limit_channels_last` the same on the channels_last"
        " model. `/ limit` holds `nonrobust_ext_channels_last` to `limit_channels_last`, every other row to"
        " `limit`.",
        "- `nonrobust_ext_early_stop` does less work than the other rows: a sample leaves the batch at the step"
        " that fools it (the same fooled set, not the same algorithm; its max diff is not expected to be 0).",
        "- `nonrobust_ext_bf16`: " + ("autocast to bfloat16 (the device computes bf16 natively); its"
                                      " gradients differ, so it is compared by robust accuracy"
                                      if bf16 else "not run: the device has no native bf16 (`--bf16 on` forces it)"),
    ]
    report(rows, args.out, f"attacks_efficientnet_{tag}",
           "PGD-10 (L-inf, eps 8/255, alpha 2/255) on EfficientNet-Lite0", intro,
           lite0_targets(rows) + targets(rows, device), device_name(device))


if __name__ == "__main__":
    main()
