"""scikit-build-core metadata provider: pin the runtime torch to the torch the extension is built against.

The compiled module only works with the exact torch it was compiled against, so the wheel requires that
torch's public version (``torch==2.13.0`` matches ``2.13.0+cpu``). A static open range (``torch>=2.11``)
would let pip fetch the newest torch, a multi-GB CUDA build, on a fresh machine.
"""

from __future__ import annotations

from typing import Any


def dynamic_metadata(field: str, settings: dict[str, Any] | None = None) -> list[str]:
    if field != "dependencies":
        raise RuntimeError(f"torch_pin only provides 'dependencies', not {field!r}")
    import torch

    public = torch.__version__.split("+", 1)[0]
    extra = list((settings or {}).get("extra", []))
    return [f"torch=={public}", *extra]
