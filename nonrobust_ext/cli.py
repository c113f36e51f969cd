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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nonrobust-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on synthetic data and attack it (seconds)")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where results.json and report.md go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--steps", type=int, default=10, help="PGD steps")
    demo.add_argument("--eps", type=_parse_eps, default=None, help="comma-separated L-inf radii")

    sub.add_parser("info", help="print how the compiled extension was built")

    args = parser.parse_args(argv)
    if args.command == "info":
        import nonrobust_ext

        print(json.dumps(nonrobust_ext.build_info(), indent=2))
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
