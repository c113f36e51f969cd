"""The one progress bar every long loop uses (training, analyses, the study): tqdm, quiet when
stderr is not a terminal (logs, CI), and a no-op when disabled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable[Any] | None = None, *, description: str, enabled: bool = True,
                 total: int | None = None, initial: int = 0, unit: str = "it") -> Any:
    """``iterable`` wrapped in a tqdm bar, or (``iterable=None``) a bar to ``update(n)`` by hand.

    Disabled (or without tqdm), it returns ``iterable`` itself, or an object whose ``update`` and
    ``close`` do nothing.
    """
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is a runtime dependency; without it, stay quiet rather than fail
            pass
        else:
            # disable=None: tqdm turns itself off when stderr is not a terminal.
            return tqdm(iterable, total=total, initial=initial, desc=description, unit=unit, disable=None,
                        dynamic_ncols=True)
    return iterable if iterable is not None else _NoBar()
