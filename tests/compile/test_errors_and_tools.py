"""Bad packages, coremldata reading, metadata rules, the CLI and the Apple-compiler wrapper."""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys

import pytest
from coremltools.proto import Model_pb2

from kiln.compile import cli as compile_cli
from kiln.compile import compare_bundles, compile_package, read_coremldata
from kiln.compile.apple import compile_with_apple, find_coremlcompiler
from kiln.coreml.coremldata import PAYLOAD_LENGTH_OFFSET, SPEC_VERSION_OFFSET, build_coremldata
from kiln.compile.errors import AppleCompilerError, CoremlDataError, MilSyntaxError, PackageError
from kiln.compile.metadata import class_name, histogram_name
from kiln.coreml.mil_text.grammar import DIALECTS
from kiln.coreml.mil_text.parser import parse_program
from kiln.foundation.errors import KilnError


@pytest.fixture
def package_copy(value_kinds_package, tmp_path):
    copy = tmp_path / "copy.mlpackage"
    shutil.copytree(value_kinds_package, copy)
    return copy


def _manifest(package):
    return json.loads((package / "Manifest.json").read_text())


def _write_manifest(package, manifest):
    (package / "Manifest.json").write_text(json.dumps(manifest))


def test_builder_package_compiles_and_its_files_read_back(value_kinds_package, tmp_path):
    out = compile_package(value_kinds_package, tmp_path / "kinds.mlmodelc")
    model = Model_pb2.Model()
    model.ParseFromString((value_kinds_package / "Data/com.apple.CoreML/model.mlmodel").read_bytes())
    assert read_coremldata(out / "coremldata.bin") == (8, model.description)
    assert parse_program((out / "model.mil").read_text()).functions["main"].opset == "CoreML7"
    meta = json.loads((out / "metadata.json").read_text())[0]
    assert meta["generatedClassName"] == "value_kinds"
    assert meta["availability"]["iOS"] == "17.0" and meta["availability"]["macOS"] == "14.0"
    assert meta["storagePrecision"] == "Float32"  # the one blob-file weight
    assert meta["computePrecision"] == "Mixed (Float32, Int32)"  # bool predicates do not count
    assert meta["mlProgramOperationTypeHistogram"]["Ios17.add"] == 3  # nested blocks are counted
    assert meta["mlProgramOperationTypeHistogram"]["Concat"] == 1
    assert "Const" not in meta["mlProgramOperationTypeHistogram"]


def test_dialect_1_3_bundle_adds_function_descriptions(value_kinds_package, tmp_path):
    out = compile_package(value_kinds_package, tmp_path / "kinds.mlmodelc", dialect="1.3")
    assert (out / "model.mil").read_text().startswith("program(1.3)\n[buildInfo = dict<string, string>(")
    _, description = read_coremldata(out / "coremldata.bin")
    assert description.defaultFunctionName == "main"
    assert [f.name for f in description.functions] == ["main"]
    assert list(description.functions[0].input) == list(description.input)


@pytest.mark.parametrize("kind, storage, histogram_key", [
    ("int8_ios16", "Mixed (Float32, Int8)", "Ios16.constexprAffineDequantize"),
    ("int4_ios18", "Mixed (Float32, Int4)", "Ios18.constexprBlockwiseShiftScale"),
    ("palette4_ios18", "Mixed (Float32, Palettized (4 bits))", "Ios18.constexprLutToDense"),
])
def test_compressed_packages_metadata(compressed_packages, tmp_path, kind, storage, histogram_key):
    out = compile_package(compressed_packages[kind], tmp_path / f"{kind}.mlmodelc")
    meta = json.loads((out / "metadata.json").read_text())[0]
    assert meta["storagePrecision"] == storage
    assert meta["mlProgramOperationTypeHistogram"][histogram_key] == 1
    weights = compressed_packages[kind] / "Data/com.apple.CoreML/weights/weight.bin"
    assert (out / "weights/weight.bin").read_bytes() == weights.read_bytes()


def test_histogram_names_follow_the_opset():
    assert histogram_name("slice_by_index", "CoreML5") == "SliceByIndex"
    assert histogram_name("cast", "CoreML5") == "Cast"
    assert histogram_name("cast", "CoreML6") == "Ios16.cast"
    assert histogram_name("transpose", "CoreML6") == "Transpose"
    assert histogram_name("constexpr_affine_dequantize", "CoreML7") == "Ios16.constexprAffineDequantize"
    assert histogram_name("add", "CoreML7") == "Ios17.add"
    assert histogram_name("relu", "CoreML8") == "Ios16.relu"


def test_class_name_is_an_identifier():
    assert class_name("silero-vad-unified-v6.0.0") == "silero_vad_unified_v6_0_0"
    assert class_name("unified_int8") == "unified_int8"
    assert class_name("2stage") == "_2stage"


# --- bad packages ---------------------------------------------------------------------------


def test_missing_manifest(package_copy, tmp_path):
    (package_copy / "Manifest.json").unlink()
    with pytest.raises(PackageError, match="Manifest.json: missing"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")
    assert not (tmp_path / "out.mlmodelc").exists()


def test_manifest_root_names_no_item(package_copy, tmp_path):
    manifest = _manifest(package_copy)
    manifest["rootModelIdentifier"] = "NOT-THERE"
    _write_manifest(package_copy, manifest)
    with pytest.raises(PackageError, match="rootModelIdentifier 'NOT-THERE' names no item"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


def test_manifest_item_missing_on_disk(package_copy, tmp_path):
    shutil.rmtree(package_copy / "Data/com.apple.CoreML/weights")
    with pytest.raises(PackageError, match="item 'weights' is missing"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


def test_root_model_file_missing(package_copy, tmp_path):
    (package_copy / "Data/com.apple.CoreML/model.mlmodel").unlink()
    with pytest.raises(PackageError, match="root model item 'com.apple.CoreML/model.mlmodel' is missing"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


@pytest.mark.parametrize("bad_path", ["../../outside/model.mlmodel", "/etc/passwd", "com.apple.CoreML/../../../x"])
def test_manifest_path_outside_the_package(package_copy, tmp_path, bad_path):
    manifest = _manifest(package_copy)
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = bad_path
    _write_manifest(package_copy, manifest)
    with pytest.raises(PackageError, match="points outside the package") as caught:
        compile_package(package_copy, tmp_path / "out.mlmodelc")
    assert "Manifest.json" in str(caught.value)


def test_non_ml_program_model_is_refused(package_copy, tmp_path):
    model = Model_pb2.Model(specificationVersion=4)
    model.neuralNetwork.SetInParent()
    (package_copy / "Data/com.apple.CoreML/model.mlmodel").write_bytes(model.SerializeToString())
    with pytest.raises(PackageError, match="model type is 'neuralNetwork', not 'mlProgram'") as caught:
        compile_package(package_copy, tmp_path / "out.mlmodelc")
    assert "model.mlmodel" in str(caught.value)


def test_garbage_model_file_is_refused(package_copy, tmp_path):
    (package_copy / "Data/com.apple.CoreML/model.mlmodel").write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(PackageError, match="not a Core ML model specification"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


def test_blob_reference_to_a_missing_file_names_the_operation(package_copy, tmp_path):
    path = package_copy / "Data/com.apple.CoreML/model.mlmodel"
    model = Model_pb2.Model()
    model.ParseFromString(path.read_bytes())
    block = model.mlProgram.functions["main"].block_specializations["CoreML7"]
    for op in block.operations:
        if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue":
            op.attributes["val"].blobFileValue.fileName = "@model_path/weights/other.bin"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(PackageError, match="operation 'blob_weight'.*'@model_path/weights/other.bin' does not exist"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


def test_unknown_value_kind_in_a_package_is_a_typed_error(package_copy, tmp_path):
    from kiln.compile.errors import UnsupportedValueError

    path = package_copy / "Data/com.apple.CoreML/model.mlmodel"
    model = Model_pb2.Model()
    model.ParseFromString(path.read_bytes())
    block = model.mlProgram.functions["main"].block_specializations["CoreML7"]
    block.operations[0].attributes["val"].ClearField("immediateValue")
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsupportedValueError, match="operation 'a_string'"):
        compile_package(package_copy, tmp_path / "out.mlmodelc")


def test_unparseable_model_mil_names_file_and_place(value_kinds_package, tmp_path):
    out = compile_package(value_kinds_package, tmp_path / "kinds.mlmodelc")
    text = (out / "model.mil").read_text().replace("cond(pred", "cond(pred pred", 1)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "cond(pred pred" in l)
    with pytest.raises(MilSyntaxError) as caught:
        parse_program(text, file=str(out / "model.mil"))
    assert caught.value.line == line and caught.value.file.endswith("kinds.mlmodelc/model.mil")
    assert isinstance(caught.value, KilnError)


def test_unknown_dialect_is_refused(value_kinds_package, tmp_path):
    with pytest.raises(KilnError, match="unknown MIL dialect '2.0'"):
        compile_package(value_kinds_package, tmp_path / "out.mlmodelc", dialect="2.0")


# --- coremldata.bin -------------------------------------------------------------------------


def _description():
    description = Model_pb2.ModelDescription()
    feature = description.input.add(name="x")
    feature.type.multiArrayType.shape.extend([1, 4])
    feature.type.multiArrayType.dataType = Model_pb2.FeatureTypes__pb2.ArrayFeatureType.FLOAT32
    for key in ("b", "a", "c"):
        description.metadata.userDefined[key] = key * 3
    return description


def test_coremldata_layout_and_round_trip(tmp_path):
    data = build_coremldata(9, _description(), ["c", "a", "b"])
    assert struct.unpack_from("<II", data, 0) == (502, 5)
    assert data[0x24:0x2B] == b"generic"
    assert struct.unpack_from("<I", data, SPEC_VERSION_OFFSET)[0] == 9
    payload_length = struct.unpack_from("<Q", data, PAYLOAD_LENGTH_OFFSET)[0]
    assert len(data) == 0x53 + payload_length + 16 and data[-16:] == struct.pack("<I", 502) + bytes(12)
    path = tmp_path / "coremldata.bin"
    path.write_bytes(data)
    assert read_coremldata(path) == (9, _description())
    from kiln.coreml.coremldata import user_defined_order
    assert user_defined_order(path) == ["c", "a", "b"]


def test_coremldata_without_metadata_still_writes_the_field(tmp_path):
    description = Model_pb2.ModelDescription()
    description.input.add(name="x")
    data = build_coremldata(7, description)
    assert data[0x53:].endswith(b"\xa2\x06\x00" + struct.pack("<I", 502) + bytes(12))


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:40], "shorter than header"),
    (lambda d: struct.pack("<I", 501) + d[4:], "expected 502"),
    (lambda d: d[:PAYLOAD_LENGTH_OFFSET] + struct.pack("<Q", 10_000) + d[PAYLOAD_LENGTH_OFFSET + 8:], "runs past the end"),
    (lambda d: d[:-16] + bytes(16), "trailer"),
    (lambda d: d[:0x24] + b"Generic" + d[0x2B:], "not 'generic'"),
])
def test_damaged_coremldata_is_a_typed_error(tmp_path, damage, message):
    path = tmp_path / "coremldata.bin"
    path.write_bytes(damage(build_coremldata(6, _description())))
    with pytest.raises(CoremlDataError, match=message) as caught:
        read_coremldata(path)
    assert str(path) in str(caught.value)


# --- compare_bundles ------------------------------------------------------------------------


def test_compare_bundles_reports_each_difference(value_kinds_package, tmp_path):
    a = compile_package(value_kinds_package, tmp_path / "a.mlmodelc")
    b = compile_package(value_kinds_package, tmp_path / "b.mlmodelc")
    assert compare_bundles(a, b) == []
    (b / "model.mil").write_text((b / "model.mil").read_text().replace("0x1.8p+0", "0x1.9p+0"))
    meta = json.loads((b / "metadata.json").read_text())
    meta[0]["generatedClassName"] = "other"
    (b / "metadata.json").write_text(json.dumps(meta))
    (b / "weights/weight.bin").unlink()
    (b / "extra.txt").write_text("x")
    problems = compare_bundles(a, b)
    assert any(p.startswith("model.mil: first differs at byte") for p in problems)
    assert "metadata.json: parsed JSON differs" in problems
    assert any(p.startswith("weights/weight.bin: only in") for p in problems)
    assert any(p.startswith("extra.txt: only in") for p in problems)


def test_compare_bundles_ignores_metadata_key_order(value_kinds_package, tmp_path):
    a = compile_package(value_kinds_package, tmp_path / "a.mlmodelc")
    b = compile_package(value_kinds_package, tmp_path / "b.mlmodelc")
    meta = json.loads((b / "metadata.json").read_text())
    (b / "metadata.json").write_text(json.dumps([dict(reversed(list(meta[0].items())))], indent=4))
    assert compare_bundles(a, b) == []


# --- CLI and Apple's compiler ---------------------------------------------------------------


def _parser():
    parser = argparse.ArgumentParser(prog="kiln")
    compile_cli.add_commands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_compiles_a_package(value_kinds_package, tmp_path, capsys):
    out = tmp_path / "cli.mlmodelc"
    args = _parser().parse_args(["compile", str(value_kinds_package), "-o", str(out), "--dialect", "1.3"])
    assert args.func(args) == 0
    assert (out / "model.mil").read_text().startswith("program(1.3)")
    assert capsys.readouterr().out.strip() == str(out)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    from kiln.foundation.errors import run_command

    args = _parser().parse_args(["compile", str(tmp_path / "missing.mlpackage"), "-o", str(tmp_path / "x.mlmodelc")])
    assert run_command(args) == 2
    assert "missing.mlpackage: not a directory" in capsys.readouterr().err


def test_cli_dialect_choices_match_the_printer():
    assert compile_cli.DIALECTS == DIALECTS
    with pytest.raises(SystemExit):
        _parser().parse_args(["compile", "x.mlpackage", "--dialect", "9.9"])


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the behaviour where Apple's compiler is absent")
def test_apple_compiler_is_absent_off_macos(value_kinds_package, tmp_path):
    assert find_coremlcompiler() is None
    with pytest.raises(AppleCompilerError, match="not available"):
        compile_with_apple(value_kinds_package, tmp_path / "apple.mlmodelc")


@pytest.mark.skipif(find_coremlcompiler() is None, reason="Apple's coremlcompiler is not installed (macOS only)")
def test_kiln_matches_apple_on_a_fresh_package(value_kinds_package, tmp_path):
    from kiln.coreml.mil_text.build_info import build_info_entries

    apple = compile_with_apple(value_kinds_package, tmp_path / "apple.mlmodelc")
    # compile as the installed coremlc would: its dialect and its version strings
    apple_text = (apple / "model.mil").read_text()
    dialect = apple_text[len("program("):apple_text.index(")")]
    apple_info = build_info_entries(parse_program(apple_text).attributes["buildInfo"])
    versions = {k: v for k, v in apple_info.items() if k.startswith("coremlc-")}
    ours = compile_package(value_kinds_package, tmp_path / "ours.mlmodelc", dialect=dialect, build_info=versions)
    assert compare_bundles(ours, apple) == []
