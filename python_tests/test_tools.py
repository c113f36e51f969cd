"""tools/compare_results.py: the check that a change left a study's numbers as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_results.py"


def _run(tmp_path, old, new, *extra):
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    return subprocess.run([sys.executable, str(TOOL), str(tmp_path / "old.json"), str(tmp_path / "new.json"), *extra],
                          capture_output=True, text=True)


def test_identical_results_but_for_the_timing_pass(tmp_path):
    old = {"seconds": 10.0, "seeds": {"0": {"acc": [0.5, 0.25], "n": 3}}}
    new = {"seconds": 99.0, "seeds": {"0": {"acc": [0.5, 0.25], "n": 3}}}
    done = _run(tmp_path, old, new)
    assert done.returncode == 0 and done.stdout.startswith("3 values compared, 0 differ")


def test_a_changed_value_a_missing_key_and_a_type_change_are_reported(tmp_path):
    old = {"a": 0.5, "b": 1, "c": [1, 2], "gone": 1}
    new = {"a": 0.5000001, "b": 1.0, "c": [1, 2, 3]}
    done = _run(tmp_path, old, new)
    assert done.returncode == 1
    for where in ("/a:", "/b:", "/c:", "/gone: only in old"):
        assert where in done.stdout
    assert _run(tmp_path, {"a": 0.5}, {"a": 0.5000001}, "--rtol", "1e-6").returncode == 0
