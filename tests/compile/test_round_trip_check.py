"""The compile job's round-trip check: a bundle is its package's program (parsed back from
model.mil) with byte-identical weights; any edit of the text or a weight byte is named."""

from __future__ import annotations

import numpy as np

from kiln.compile import compile_package
from kiln.compile.compare import compare_bundle_to_package
from kiln.compile.stage import round_trip


def test_a_fresh_bundle_is_its_package(compressed_packages, tmp_path):
    for kind in ("int8_ios16", "palette4_ios18"):
        package = compressed_packages[kind]
        for dialect in ("1.0", "1.3"):
            bundle = compile_package(package, tmp_path / f"{kind}_{dialect}.mlmodelc", dialect=dialect)
            assert compare_bundle_to_package(package, bundle) == [], (kind, dialect)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    assert round_trip(package, bundle, {"x": x}) == {"program": "identical", "weights": "identical",
                                                     "execution": "executed"}


def test_edited_text_or_weights_are_reported(compressed_packages, tmp_path):
    package = compressed_packages["int8_ios16"]
    bundle = compile_package(package, tmp_path / "b.mlmodelc")
    mil = bundle / "model.mil"
    text = mil.read_text()
    assert "relu(" in text
    mil.write_text(text.replace("relu(", "sigmoid(", 1))
    assert compare_bundle_to_package(package, bundle) == [f"model.mil: does not parse back to the program of {package}"]
    mil.write_text(text)
    weight = bundle / "weights" / "weight.bin"
    data = bytearray(weight.read_bytes())
    data[-1] ^= 1
    weight.write_bytes(bytes(data))
    problems = compare_bundle_to_package(package, bundle)
    assert len(problems) == 1 and problems[0].startswith("weights/weight.bin: differs from ")


def test_the_round_trip_refuses_an_edited_bundle_naming_what_differs(compressed_packages, tmp_path):
    import pytest

    from kiln.compile.errors import CompileError
    from kiln.integrity.digests import DigestCache

    package = compressed_packages["int8_ios16"]
    x = {"x": np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)}
    bundle = compile_package(package, tmp_path / "b.mlmodelc")
    weight = bundle / "weights" / "weight.bin"
    data = bytearray(weight.read_bytes())
    data[-1] ^= 1
    weight.write_bytes(bytes(data))
    # the weights hash on a second thread while the bundle runs; the difference is still named
    with pytest.raises(CompileError, match=r"weights/weight.bin: differs from .* \(sha256\)"):
        round_trip(package, bundle, x, DigestCache(None))
    bundle = compile_package(package, tmp_path / "c.mlmodelc")
    mil = bundle / "model.mil"
    mil.write_text(mil.read_text().replace("relu(", "sigmoid(", 1))
    with pytest.raises(CompileError, match="does not parse back to the program of"):
        round_trip(package, bundle, x, DigestCache(None))
