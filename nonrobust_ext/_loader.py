"""Loads the compiled module after checking it was built against the running torch."""

from __future__ import annotations

import importlib

import torch

REBUILD_HINT = (
    "Rebuild nonrobust_ext against the installed torch: "
    "`pip install --no-build-isolation --force-reinstall --no-deps .` from the source tree "
    "(with scikit-build-core, pybind11 and ninja installed)."
)


def check_torch_version(built: str, running: str) -> None:
    """Raise ImportError when the extension was compiled against another torch than the running one."""
    if built != running:
        raise ImportError(
            f"nonrobust_ext was compiled against torch {built} but torch {running} is installed; "
            f"its kernels would not load or would misbehave. {REBUILD_HINT}"
        )


def load_extension():
    try:
        build_config = importlib.import_module("nonrobust_ext._build_config")
    except ModuleNotFoundError as err:
        raise ImportError(
            "nonrobust_ext's compiled module is missing: this looks like the source tree rather than an "
            "installed package. Install it with `pip install .` (or `make install`), and run from "
            "outside the source tree or with pytest's --import-mode=importlib."
        ) from err
    check_torch_version(build_config.TORCH_VERSION, torch.__version__)
    return importlib.import_module("nonrobust_ext._C"), build_config
