"""The compile stage: kiln's compiler off macOS, the executor round trip, the `apple` choice."""

from __future__ import annotations

import platform

import pytest

from kiln.compile.errors import CompileError
from kiln.export.convert import export_component
from kiln.models import get_family
from kiln.compile.stage import compile_component


@pytest.fixture(scope="module")
def package(tmp_path_factory, kiln_config, silero_net):
    out = tmp_path_factory.mktemp("pkg") / "unified_256ms.mlpackage"
    export_component(get_family("silero_vad"), silero_net,
                     kiln_config.component("silero_vad", "unified_256ms"), out)
    return out


@pytest.mark.skipif(platform.system() == "Darwin", reason="exercises the non-macOS path")
def test_kiln_compiler_and_bit_identical_round_trip(package, tmp_path, kiln_config):
    comp = kiln_config.component("silero_vad", "unified_256ms")
    inputs = get_family("silero_vad").check_contract(comp).example_inputs(comp, {}, seed=1)
    bundle = tmp_path / "unified_256ms.mlmodelc"
    result = compile_component(package, bundle, {"compiler": "auto", "dialect": "1.0"}, check_inputs=inputs)
    assert result["compiler"] == "kiln" and not result["apple_compiler_available"]
    assert result["round_trip"] == {"program": "identical", "weights": "identical", "execution": "executed"}
    assert sorted(p.name for p in bundle.iterdir()) == ["analytics", "coremldata.bin", "metadata.json",
                                                        "model.mil", "weights"]
    with pytest.raises(CompileError, match="compile.compiler: apple"):
        compile_component(package, tmp_path / "x.mlmodelc", {"compiler": "apple"})
