"""kiln's compiler against Apple's `coremlc` 3500.32.1 on the three golden pairs."""

from __future__ import annotations

import json

from coremltools.proto import Model_pb2

from kiln.compile import compare_bundles, compile_package, read_coremldata
from kiln.coreml.coremldata import build_coremldata, parse_analytics, user_defined_order


def test_model_mil_is_byte_identical(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    assert (ours / "model.mil").read_bytes() == (apple / "model.mil").read_bytes()


def test_coremldata_is_byte_identical_in_apples_user_defined_order(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    spec_version, description = read_coremldata(ours / "coremldata.bin")
    apple_spec_version, apple_description = read_coremldata(apple / "coremldata.bin")
    # field by field
    assert spec_version == apple_spec_version
    assert description == apple_description
    assert dict(description.metadata.userDefined) == dict(apple_description.metadata.userDefined)
    # bytes, once our userDefined entries follow Apple's (hash) order
    apple_order = user_defined_order(apple / "coremldata.bin")
    assert sorted(apple_order) == sorted(description.metadata.userDefined)
    assert build_coremldata(spec_version, description, apple_order) == (apple / "coremldata.bin").read_bytes()
    # and our file is exactly what the writer gives in our own (sorted) order
    assert (ours / "coremldata.bin").read_bytes() == build_coremldata(spec_version, description)
    assert user_defined_order(ours / "coremldata.bin") == sorted(apple_order)


def test_coremldata_description_is_the_packages(golden_pair, tmp_path):
    package, _ = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    model = Model_pb2.Model()
    model.ParseFromString((package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    assert read_coremldata(ours / "coremldata.bin") == (model.specificationVersion, model.description)


def test_analytics_is_byte_identical(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    assert (ours / "analytics/coremldata.bin").read_bytes() == (apple / "analytics/coremldata.bin").read_bytes()
    sections = parse_analytics((ours / "analytics/coremldata.bin").read_bytes())
    assert sections["SpecificationDetails"]["modelName"] == "model"


def test_metadata_json_equals_apples(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    assert json.loads((ours / "metadata.json").read_text()) == json.loads((apple / "metadata.json").read_text())


def test_weights_are_copied_byte_identical(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    assert (ours / "weights/weight.bin").read_bytes() == (apple / "weights/weight.bin").read_bytes()
    assert (ours / "weights/weight.bin").read_bytes() == (package / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()


def test_compare_bundles_finds_no_difference_and_the_same_files(golden_pair, tmp_path):
    package, apple = golden_pair
    ours = compile_package(package, tmp_path / "out.mlmodelc")
    assert compare_bundles(ours, apple) == []
    assert sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file()) == sorted(
        p.relative_to(apple).as_posix() for p in apple.rglob("*") if p.is_file())


def test_compiling_twice_gives_identical_bytes(golden_pair, tmp_path):
    package, _ = golden_pair
    first = compile_package(package, tmp_path / "a.mlmodelc")
    second = compile_package(package, tmp_path / "b.mlmodelc")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_recompiling_replaces_the_bundle_atomically(golden_pair, tmp_path):
    package, _ = golden_pair
    out = tmp_path / "out.mlmodelc"
    compile_package(package, out)
    (out / "weights" / "stale.bin").write_bytes(b"left over by an older compile")
    compile_package(package, out)
    assert not (out / "weights" / "stale.bin").exists()
    # no staging directory is left beside the bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.mlmodelc", package.name])
