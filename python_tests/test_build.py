"""The build: build_info, the torch-version guard, registered ops."""

from __future__ import annotations

import pytest
import torch

import nonrobust_ext
from nonrobust_ext._loader import check_torch_version


def test_build_info_reports_the_build():
    info = nonrobust_ext.build_info()
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["with_cuda"], bool)
    assert info["with_cuda"] == bool(info["cuda_archs"])
    assert info["cpu_isa"] in info["cpu_isas_compiled"]
    assert info["cpu_isa"] in ("baseline", "avx2", "avx512")
    if torch.version.cuda is None:
        assert info["with_cuda"] is False


def test_import_against_another_torch_says_how_to_rebuild():
    with pytest.raises(ImportError, match=r"compiled against torch 2\.11\.0.*--no-build-isolation"):
        check_torch_version("2.11.0", "2.13.0+cpu")
    check_torch_version("2.13.0+cpu", "2.13.0+cpu")


@pytest.mark.parametrize("name", ["linf_step_", "l2_step_", "random_init_"])
def test_ops_are_registered_with_mutation_in_schema(name):
    schema = getattr(torch.ops.nonrobust_ext, name).default._schema
    assert schema.arguments[0].alias_info is not None and schema.arguments[0].alias_info.is_write
    assert len(schema.returns) == 0


_ISA_PROBE = """
import torch, nonrobust_ext
from nonrobust_ext import ops
try:
    {call}
except ValueError as error:
    print("ValueError:", error)
"""


@pytest.mark.parametrize(
    "call",
    [
        "nonrobust_ext.build_info()",
        "x = torch.rand(2, 3, 4, 4); ops.linf_step_(x.clone(), x, x, eps=0.1, alpha=0.01)",
        "ops.class_feature_stats(torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), num_classes=2)",
    ],
    ids=["build_info", "attack step", "feature statistics"],
)
def test_one_cpu_isa_selector_for_every_op_family(call):
    """NONROBUST_EXT_CPU_ISA is read by the one selector every CPU kernel uses: an unknown value is a
    ValueError naming the variable, whichever op family asks first."""
    import os
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", _ISA_PROBE.format(call=call)],
        env={**os.environ, "NONROBUST_EXT_CPU_ISA": "sse9"},
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert "ValueError: NONROBUST_EXT_CPU_ISA=sse9 is not one of the ISAs this build has" in probe.stdout
