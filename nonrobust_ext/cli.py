"""`nonrobust-ext <command>`: parses arguments and calls into experiments/attacks, nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def _parse_eps(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--eps takes comma-separated numbers, got {text!r}") from err


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",")) if text.strip() else ()
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


# `study` option (argparse dest) -> StudyConfig field, for the options whose names differ; the others
# are the field's name.
_STUDY_FIELD = {"eps": "eval_eps", "attack": "eval_attack", "steps": "eval_steps", "samples": "eval_samples"}


def _add_study_options(study: argparse.ArgumentParser) -> None:
    add = study.add_argument
    add("--out", type=Path, default=Path("out/study"), help="where models, results.json, report.md go")
    add("--quick", action="store_true", help="a small configuration (under 3 minutes on 2 cores)")
    add("--config", type=Path, default=None,
        help="a JSON file of study settings (a previous results.json works: its 'config' is read); "
             "options given here override it")
    add("--fresh", action="store_true", help="retrain every stage instead of reusing finished ones")
    data = study.add_argument_group("data")
    data.add_argument("--dataset", help="fashion_mnist (default), synthetic, cifar10, cifar100, folder")
    data.add_argument("--data-root", help="folder holding the dataset's files")
    data.add_argument("--source-classes", type=_parse_ints, help="comma-separated class ids of the source task")
    data.add_argument("--target-classes", type=_parse_ints, help="comma-separated class ids of the target task")
    data.add_argument("--shots", type=int, help="target training images per class")
    data.add_argument("--source-per-class", type=int, help="source training images per class")
    model = study.add_argument_group("models and training")
    model.add_argument("--backbone", help="a nonrobust_ext.models name: resnet8 (default), resnet18, resnet50, "
                                          "wrn50, ... or torchvision:<name>")
    model.add_argument("--pretrained", help="'torchvision' (ImageNet weights from the local torch hub cache) or a "
                                            "weights file: the source models are ImageNet models, not trained here")
    model.add_argument("--robust-pretrained", help="with --pretrained: a robust ImageNet weights file (e.g. the "
                                                   "robustness library's); without it the robust models are left out")
    model.add_argument("--image-size", type=int, help="resize inputs inside the models (default: 224 with "
                                                      "--pretrained, the images' own size otherwise)")
    model.add_argument("--seeds", type=_parse_ints, help="comma-separated seeds (several: mean ± std)")
    model.add_argument("--source-epochs", type=int, help="epochs of (adversarial) pretraining on the source")
    model.add_argument("--target-steps", type=int, help="optimiser steps of every target-task model")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--lr", type=float, help="learning rate of every stage")
    model.add_argument("--freeze-stages", type=int, help="backbone stages frozen when fine-tuning")
    model.add_argument("--head-lr", type=float, help="fine-tuning learning rate of the new head")
    model.add_argument("--backbone-lr", type=float, help="fine-tuning learning rate of the pretrained backbone")
    model.add_argument("--train-eps", type=float, help="L-inf eps of adversarial pretraining and of DM")
    model.add_argument("--train-steps", type=int, help="PGD steps of adversarial pretraining and of DM")
    model.add_argument("--dm-beta", type=float, help="weight of DM's feature-discrepancy term")
    model.add_argument("--select", choices=("last", "val_accuracy"),
                       help="weights each trained model ends with: its last step (default) or its best accuracy on "
                            "the validation split (never the test set)")
    evaluation = study.add_argument_group("evaluation (changing these re-evaluates cached models)")
    evaluation.add_argument("--attack", help="attack of the eps grid: pgd (default), apgd, fgsm, bim, mifgsm, difgsm")
    evaluation.add_argument("--eps", type=_parse_eps, help="comma-separated L-inf radii to evaluate")
    evaluation.add_argument("--steps", type=int, help="steps of the eps-grid attack")
    evaluation.add_argument("--apgd-steps", type=int, help="steps of the headline APGD-CE (0 skips it)")
    evaluation.add_argument("--samples", type=int, help="test images evaluated per model")
    evaluation.add_argument("--analysis-samples", type=int, help="test images the analyses (CKA, transfer, ...) use")
    add("--device", help="cpu (default) or cuda; under torchrun, cuda is each rank's LOCAL_RANK GPU")


def study_config(args: argparse.Namespace) -> Any:
    """The :class:`StudyConfig` that ``nonrobust-ext study`` runs for parsed ``args``: the defaults (or
    ``--quick``'s, or ``--config``'s), with every option given on the command line on top."""
    from .experiments.study import StudyConfig

    fields = {f for f in StudyConfig.__dataclass_fields__}
    options: dict[str, Any] = {}
    for dest, value in vars(args).items():
        field = _STUDY_FIELD.get(dest, dest)
        if field in fields and value is not None:
            options[field] = value
    if args.config is not None:
        if args.quick:
            raise ValueError("--quick and --config both choose the settings; give one")
        values = json.loads(args.config.read_text())
        return StudyConfig.from_dict(values.get("config", values) if isinstance(values, dict) else values, **options)
    return StudyConfig.quick(**options) if args.quick else StudyConfig(**options)


def _init_distributed(device: str) -> bool:
    """Under torchrun (``WORLD_SIZE`` > 1): join the process group (NCCL on GPUs, gloo on CPUs)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return True


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nonrobust-ext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on synthetic data and attack it (seconds)")
    demo.add_argument("--out", type=Path, default=Path("out/demo"), help="where results.json and report.md go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--epochs", type=int, default=4)
    demo.add_argument("--steps", type=int, default=10, help="PGD steps")
    demo.add_argument("--eps", type=_parse_eps, default=None, help="comma-separated L-inf radii")

    study = sub.add_parser("study", help="the transfer study: train six models per seed, evaluate, write a report")
    _add_study_options(study)

    sub.add_parser("info", help="print how the compiled extension was built")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        import nonrobust_ext

        print(json.dumps(nonrobust_ext.build_info(), indent=2))
        return 0
    if args.command == "study":
        from .experiments.study import run_study

        distributed = False
        try:
            config = study_config(args)
            distributed = _init_distributed(config.device)
            results = run_study(config, args.out, fresh=args.fresh)
        except (FileNotFoundError, ValueError) as error:
            print(f"nonrobust-ext study: {error}", file=sys.stderr)
            return 2
        finally:
            if distributed:
                import torch.distributed as dist

                dist.destroy_process_group()
        if results is not None:  # rank 0 (or the only process) wrote them
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
