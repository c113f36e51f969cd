"""`nonrobust-ext <command>`: parses arguments and calls into experiments/attacks, nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parse_eps(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--eps takes comma-separated numbers, got {text!r}") from err


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nonrobust-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on synthetic data and attack it (seconds)")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where results.json and report.md go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--steps", type=int, default=10, help="PGD steps")
    demo.add_argument("--eps", type=_parse_eps, default=None, help="comma-separated L-inf radii")

    study = sub.add_parser("study", help="the transfer study: train six models per seed, evaluate, write a report")
    study.add_argument("--out", type=Path, default=Path("out/study"), help="where models, results.json, report.md go")
    study.add_argument("--quick", action="store_true", help="a small configuration (a minute or two on 2 cores)")
    study.add_argument("--fresh", action="store_true", help="retrain every stage instead of reusing finished ones")
    study.add_argument("--dataset", default=None, help="fashion_mnist (default), synthetic, cifar10, cifar100, folder")
    study.add_argument("--data-root", default=None, help="folder holding the dataset's files")
    study.add_argument("--backbone", default=None, help="a nonrobust_ext.models name (default resnet8)")
    study.add_argument("--seeds", type=_parse_ints, default=None, help="comma-separated seeds")
    study.add_argument("--shots", type=int, default=None, help="target training images per class")
    study.add_argument("--freeze-stages", type=int, default=None, help="backbone stages frozen when fine-tuning")
    study.add_argument("--head-lr", type=float, default=None)
    study.add_argument("--backbone-lr", type=float, default=None)
    study.add_argument("--eps", type=_parse_eps, default=None, help="comma-separated L-inf radii to evaluate")
    study.add_argument("--device", default=None, help="cpu (default) or cuda")

    sub.add_parser("info", help="print how the compiled extension was built")

    args = parser.parse_args(argv)
    if args.command == "info":
        import nonrobust_ext

        print(json.dumps(nonrobust_ext.build_info(), indent=2))
        return 0
    if args.command == "study":
        from .experiments.study import StudyConfig, run_study

        options = {
            "dataset": args.dataset, "data_root": args.data_root, "backbone": args.backbone, "seeds": args.seeds,
            "shots": args.shots, "freeze_stages": args.freeze_stages, "head_lr": args.head_lr,
            "backbone_lr": args.backbone_lr, "eval_eps": args.eps, "device": args.device,
        }
        options = {k: v for k, v in options.items() if v is not None}
        try:
            config = StudyConfig.quick(**options) if args.quick else StudyConfig(**options)
            run_study(config, args.out, fresh=args.fresh)
        except (FileNotFoundError, ValueError) as error:
            print(f"nonrobust-ext study: {error}", file=sys.stderr)
            return 2
        print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
        return 0
    if args.command == "demo":
        from .experiments.demo import DemoConfig, run_demo

        cfg = DemoConfig(out=args.out, seed=args.seed, epochs=args.epochs, steps=args.steps)
        if args.eps is not None:
            cfg.eps_grid = args.eps
        run_demo(cfg)
        print(f"wrote {cfg.out / 'results.json'} and {cfg.out / 'report.md'}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
