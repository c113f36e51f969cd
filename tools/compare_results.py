"""Compare two study results.json files value by value (the check that a refactoring left the study's
numbers as they were).

    python tools/compare_results.py OLD/results.json NEW/results.json [--rtol 1e-9] [--ignore seconds]

Prints how many values were compared and every one that differs (beyond ``--rtol`` for floats), and
exits 1 when any differs or the two files do not have the same keys. Timing fields (``seconds``) are
ignored by default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any


def compare(old: Any, new: Any, *, rtol: float, ignore: set[str], path: str = "") -> tuple[int, list[str]]:
    """``(values compared, differences)`` between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        count, diffs = 0, []
        for key in sorted(set(old) | set(new)):
            if key in ignore:
                continue
            where = f"{path}/{key}"
            if key not in old or key not in new:
                diffs.append(f"{where}: only in {'new' if key in new else 'old'}")
                continue
            c, d = compare(old[key], new[key], rtol=rtol, ignore=ignore, path=where)
            count, diffs = count + c, diffs + d
        return count, diffs
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return 0, [f"{path}: {len(old)} items vs {len(new)}"]
        count, diffs = 0, []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            c, d = compare(a, b, rtol=rtol, ignore=ignore, path=f"{path}[{i}]")
            count, diffs = count + c, diffs + d
        return count, diffs
    if isinstance(old, float) and isinstance(new, float):
        same = old == new or math.isclose(old, new, rel_tol=rtol, abs_tol=0.0)
        return 1, [] if same else [f"{path}: {old!r} vs {new!r} (difference {abs(old - new):.3g})"]
    return 1, [] if (old == new and type(old) is type(new)) else [f"{path}: {old!r} vs {new!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default: exact)")
    parser.add_argument("--ignore", nargs="*", default=["seconds"], help="keys to skip anywhere (default: seconds)")
    args = parser.parse_args(argv)
    with open(args.old) as f_old, open(args.new) as f_new:
        old, new = json.load(f_old), json.load(f_new)
    count, diffs = compare(old, new, rtol=args.rtol, ignore=set(args.ignore))
    print(f"{count} values compared, {len(diffs)} differ" + (f" (rtol {args.rtol:g})" if args.rtol else ""))
    for line in diffs:
        print("  " + line)
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
