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
