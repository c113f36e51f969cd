"""`nonrobust-ext <command>`: parses arguments and calls into experiments/attacks, nothing else.

The ``study`` and ``demo`` options are built from their configs' own field descriptions
(:func:`nonrobust_ext.experiments._settings.settings`): each setting's help, option name, group and
choices are written once, in the config. The configs check every value; this module only turns a
message about a setting into one about the option the user typed.

What a user can get wrong — a bad value, a missing or unreadable file, a folder where a file should
be — ends in one line on stderr and exit code 2, before any model trains; Ctrl-C ends in one line and
exit code 130 (a study's finished stages are kept). A traceback means a bug in the library.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NoReturn

PROG = "nonrobust-ext"
EXIT_USER_ERROR = 2  # argparse's own code for a usage error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
# The errors a user can cause: a bad value or type (json.JSONDecodeError is a ValueError), a file or
# folder that is missing, unreadable or of the wrong kind (OSError's subclasses), an optional package
# that is not installed, a training run that diverged (FloatingPointError: the message says what to try).
# Anything else escaping a command is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, ImportError, FloatingPointError)
# What Ctrl-C leaves behind, per command.
INTERRUPTED = {
    "study": "interrupted; finished stages are kept, run the same command again to resume",
    "sweep": "interrupted; finished points and stages are kept, run the same command again to resume",
    "demo": "interrupted; nothing was written",
}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``nonrobust-ext study: --steps must be an int, got '1.5'``)
    instead of the usage text plus a line; still exit code 2."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument (-[-\w]+): ", r"\1 ", message)  # "argument --eps: takes ..." -> "--eps takes ..."
        self.exit(EXIT_USER_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


# Parsers of the option text into a setting's type. They check only the syntax (an int is an int);
# the config checks the value (a range, a choice), so the Python API refuses the same values.
def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None


def _real(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    """Comma-separated ints; an empty text is an empty list (the config says whether that is allowed)."""
    try:
        return tuple(int(v) for v in text.split(",")) if text.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated integers, got {text!r}") from None


def _reals(text: str) -> tuple[float, ...]:
    """Comma-separated numbers; an empty text is an empty list (the config says whether that is allowed)."""
    try:
        return tuple(float(v) for v in text.split(",")) if text.strip() else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes comma-separated numbers, got {text!r}") from None


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a non-empty path")
    return Path(text)


def _strs(text: str) -> tuple[str, ...]:
    """Comma-separated words; an empty text is an empty list (the config says whether that is allowed)."""
    return tuple(v.strip() for v in text.split(",")) if text.strip() else ()


_PARSE: dict[Any, Callable[[str], Any]] = {
    int: _int, float: _real, str: str, Path: _path, tuple[int, ...]: _ints, tuple[float, ...]: _reals,
    tuple[str, ...]: _strs,
}


def _add_setting_options(parser: argparse.ArgumentParser, config_class: type,
                         groups: Collection[str] = ()) -> None:
    """One option per described setting of ``config_class``, in its ``--help`` group (``groups``
    fixes the groups' order). Every option defaults to ``None``, "not given": the config's own
    default (or ``--quick``'s, or ``--config``'s) then applies."""
    from .experiments._settings import settings

    where: dict[str | None, Any] = {None: parser}
    where.update({title: parser.add_argument_group(title) for title in groups})
    for s in settings(config_class):
        if s.group not in where:
            where[s.group] = parser.add_argument_group(s.group)
        metavar = "{" + ",".join(s.choices) + "}" if s.choices else s.option.lstrip("-").upper().replace("-", "_")
        where[s.group].add_argument(s.option, dest=s.name, type=_PARSE[s.kind], default=None, metavar=metavar,
                                    help=s.help)


def _option_names(config_class: type, **extra: str) -> dict[str, str]:
    """Setting (field) name -> its option, plus ``extra`` names of arguments that are not settings."""
    from .experiments._settings import settings

    return {**{s.name: s.option for s in settings(config_class)}, **extra}


def _given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The settings given on the command line (``None``: not given)."""
    from .experiments._settings import settings

    return {s.name: getattr(args, s.name) for s in settings(config_class) if getattr(args, s.name) is not None}


_LEADING_NAME = re.compile(r"^([a-z][a-z0-9_]*)(?=[\[\s:])")
_SNAKE_WORD = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")


def user_message(error: BaseException | str, options: Mapping[str, str], *, from_file: Collection[str] = (),
                 config_file: Path | None = None, about_file: bool = False) -> str:
    """An error's message as one line that names what the user typed: the option of a setting instead
    of its field name (``eval_steps must be >= 1`` -> ``--steps must be >= 1``), or the ``--config``
    file for a setting read from it.

    Args:
        error: the exception (or its message).
        options: setting (field) name -> option.
        from_file: the settings whose values came from the ``--config`` file (their JSON keys stay).
        config_file: the ``--config`` file, if any.
        about_file: the message may be about the file as a whole (an unknown key): without a setting
            to name, it is then put on the file.

    Returns:
        The message on one line.
    """
    message = re.sub(r"\s*\n\s*", " ", str(error).strip())
    match = _LEADING_NAME.match(message)
    leading = match.group(1) if match else None
    about_the_file = about_file and leading not in options and not message.startswith("-")  # "--config: ..." is
    if config_file is not None and (leading in from_file or about_the_file):
        return f"--config {config_file}: {message}"

    def rename(word: re.Match[str]) -> str:
        name = word.group(0)
        return options[name] if name in options and name not in from_file else name

    # A setting with an underscore in its name (eval_steps) is unambiguous anywhere in a message; a
    # one-word one (shots, lr, device, out) is an ordinary word too: renamed only where the message
    # starts with it, which is where every check puts the name it refuses.
    message = _SNAKE_WORD.sub(rename, message)
    if leading is not None and "_" not in leading and leading in options and leading not in from_file:
        message = options[leading] + message[len(leading):]
    return message


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a ``--config`` JSON file (a previous ``results.json``: its ``"config"``).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be read.
        ValueError: it is not JSON.
        TypeError: it does not hold a JSON object of settings.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise IsADirectoryError(f"--config: {path} is a folder; give a JSON file (a previous results.json works)") \
            from None
    except FileNotFoundError:
        raise FileNotFoundError(f"--config: no file at {path}") from None
    except OSError as error:
        raise type(error)(f"--config: cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config: {path} is not a text (JSON) file") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--config: {path} is not valid JSON ({error})") from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict):
        values = values["config"]  # a results.json
    if not isinstance(values, dict):
        raise TypeError(f"--config: {path} must hold a JSON object of settings (or a results.json), "
                        f"got a JSON {type(values).__name__}")
    return values


def _study_sources(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The ``--config`` file's settings (``None`` without one) and the options given."""
    from .experiments.study import StudyConfig

    if args.config is not None and args.quick:
        raise ValueError("--quick and --config both choose the settings; give one")
    if args.config is not None and args.preset is not None:
        raise ValueError("--preset and --config both choose the settings; give one")
    file_values = _read_config_file(args.config) if args.config is not None else None
    return file_values, _given(args, StudyConfig)


def _make_study_config(quick: bool, preset: str | None, file_values: dict[str, Any] | None,
                       options: dict[str, Any]) -> Any:
    from .experiments.study import StudyConfig

    if file_values is not None:
        return StudyConfig.from_dict(file_values, **options)
    return StudyConfig.preset(preset or "imagenet", quick=quick, **options)


def study_config(args: argparse.Namespace) -> Any:
    """The :class:`StudyConfig` that ``nonrobust-ext study`` runs for parsed ``args``: the defaults (or
    ``--quick``'s, or ``--config``'s), with every option given on the command line on top.

    Raises:
        ValueError, TypeError: a bad setting (the message names its field), or ``--quick`` with ``--config``.
        OSError: the ``--config`` file cannot be read.
    """
    file_values, options = _study_sources(args)
    return _make_study_config(args.quick, args.preset, file_values, options)


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
    """The ``nonrobust-ext`` parser with its ``demo``, ``study``, ``sweep`` and ``info`` commands."""
    from .experiments.demo import DemoConfig
    from .experiments.study.config import GROUPS, PRESETS, StudyConfig

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small model on synthetic data and attack it (seconds)")
    _add_setting_options(demo, DemoConfig)

    study = sub.add_parser("study", help="the transfer study: train the models of every seed, evaluate, write a "
                                         "report")
    study.add_argument("--out", type=_path, default=Path("out/study"),
                       help="where models, results.json, report.md go (default: out/study)")
    study.add_argument("--preset", choices=tuple(PRESETS), default=None,
                       help="imagenet (default): EfficientNet-Lite0 with its ImageNet weights, fine-tuned on the "
                            "dataset; small-source: no ImageNet weights, a resnet8 source model (standard and robust) "
                            "trained on half of the classes (robust pretraining + DM)")
    study.add_argument("--quick", action="store_true", help="the preset's small version (under 5 minutes on 2 cores)")
    study.add_argument("--config", type=_path, default=None,
                       help="a JSON file of study settings (a previous results.json works: its 'config' is read); "
                            "options given here override it")
    study.add_argument("--fresh", action="store_true", help="retrain every stage instead of reusing finished ones")
    _add_setting_options(study, StudyConfig, GROUPS)

    sweep = sub.add_parser("sweep", help="the study's fine-tuned-versus-standard gaps at every value of one or more "
                                         "training settings: a table and a plot with confidence intervals")
    sweep.add_argument("--vary", action="append", default=[], metavar="FACTOR=V1,V2,...",
                       help="a training setting and its values, e.g. shots=5,10,20 or head-lr=0.01,0.1 (repeat for "
                            "a grid over several)")
    sweep.add_argument("--out", type=_path, default=Path("out/sweep"),
                       help="where the points' studies, sweep.json, sweep.md and sweep.png go (default: out/sweep)")
    sweep.add_argument("--preset", choices=tuple(PRESETS), default=None, help="the study's preset (default imagenet)")
    sweep.add_argument("--quick", action="store_true", help="the preset's small version at every point")
    sweep.add_argument("--fresh", action="store_true", help="retrain every point instead of reusing finished ones")
    _add_setting_options(sweep, StudyConfig, GROUPS)

    sub.add_parser("info", help="print how the compiled extension was built")
    return parser


def _fail(command: str, message: str) -> int:
    print(f"{PROG} {command}: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _study(args: argparse.Namespace) -> int:
    from .experiments.study import StudyConfig, run_study

    options = _option_names(StudyConfig, out="--out", fresh="--fresh")
    file_values: dict[str, Any] | None = None
    given: dict[str, Any] = {}
    try:
        file_values, given = _study_sources(args)
        config = _make_study_config(args.quick, args.preset, file_values, given)
    except USER_ERRORS as error:
        return _fail("study", user_message(error, options, from_file=set(file_values or {}) - set(given),
                                           config_file=args.config, about_file=True))
    distributed = False
    try:
        distributed = _init_distributed(config.device)
        results = run_study(config, args.out, fresh=args.fresh)
    except USER_ERRORS as error:
        return _fail("study", user_message(error, options, from_file=set(file_values or {}) - set(given),
                                           config_file=args.config))
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if results is not None:  # rank 0 (or the only process) wrote them
        print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .experiments._settings import settings
    from .experiments.study import StudyConfig
    from .experiments.sweep import parse_factors, run_sweep

    options = _option_names(StudyConfig, out="--out", fresh="--fresh", vary="--vary")
    kinds = {s.name: s.kind for s in settings(StudyConfig)}

    def parse(name: str, text: str) -> Any:
        try:
            return _PARSE[kinds[name]](text)
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"--vary {name}: {error}") from None

    try:
        factors = parse_factors(args.vary, parse)
        given = _given(args, StudyConfig)
        fixed = sorted(set(given) & {name for name, _ in factors})
        if fixed:
            raise ValueError(f"--vary {fixed[0]} and {options[fixed[0]]} both set it; give one")
        given.setdefault("methods", ())  # the fine-tuned-versus-standard pair, unless arms are asked for
        base = StudyConfig.preset(args.preset or "imagenet", quick=args.quick, **given)
        summary = run_sweep(base, factors, args.out, fresh=args.fresh)  # checks every point before any runs
    except USER_ERRORS as error:
        return _fail("sweep", user_message(error, options))
    print(f"wrote {args.out / 'sweep.json'} and {args.out / 'sweep.md'} ({len(summary['points'])} points)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import DemoConfig, run_demo

    try:
        cfg = DemoConfig(**_given(args, DemoConfig))
        run_demo(cfg)
    except USER_ERRORS as error:
        return _fail("demo", user_message(error, _option_names(DemoConfig)))
    print(f"wrote {cfg.out / 'results.json'} and {cfg.out / 'report.md'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import nonrobust_ext

    print(json.dumps(nonrobust_ext.build_info(), indent=2))
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"study": _study, "sweep": _sweep, "demo": _demo,
                                                             "info": _info}


def main(argv: list[str] | None = None) -> int:
    """Run ``nonrobust-ext`` with ``argv`` (default: the process's arguments).

    Returns:
        0 on success, 2 for an error the user can fix (one line on stderr), 130 after Ctrl-C.

    Raises:
        SystemExit: from argparse, code 0 for ``--help`` and 2 for a malformed command line (one line
            on stderr).
    """
    command = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return _COMMANDS[command](args)
    except KeyboardInterrupt:
        where = f"{PROG} {command}" if command else PROG
        print(f"{where}: {INTERRUPTED.get(command or '', 'interrupted')}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
