"""`.mlpackage` -> `.mlmodelc`, producing what Apple's `coremlc` 3500.x produces.

Every output file is a pure function of the package (and the compiler version strings), so two
compiles give identical bytes; the bundle is written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kiln.coreml.proto import Model_pb2

from kiln.compile.errors import CompileError
from kiln.compile.metadata import build_metadata, class_name, metadata_json_text
from kiln.coreml.coremldata import build_analytics, build_coremldata
from kiln.coreml.manifest import check_blob_references, read_package
from kiln.coreml.mil_text.grammar import DIALECTS
from kiln.coreml.mil_text.printer import print_program
from kiln.coreml.paths import is_mlmodelc
from kiln.foundation.fsutil import atomic_dir

# The `coremlc` whose output the golden bundles hold (Xcode 15).
COREMLC_VERSION = "3500.32.1"
COREMLC_COMPONENT_MIL = "3500.14.1"
DEFAULT_BUILD_INFO = {"coremlc-component-MIL": COREMLC_COMPONENT_MIL, "coremlc-version": COREMLC_VERSION}


def _with_function_descriptions(model: Model_pb2.Model) -> Model_pb2.ModelDescription:
    """For the 1.3 dialect: newer `coremlc` records one FunctionDescription per function and a
    defaultFunctionName (fields 20/21). Unverified; single-function models get main's I/O."""
    description = Model_pb2.ModelDescription()
    description.CopyFrom(model.description)
    if description.functions:
        return description
    for name in sorted(model.mlProgram.functions):
        function = description.functions.add(name=name)
        function.input.extend(model.description.input)
        function.output.extend(model.description.output)
        function.state.extend(model.description.state)
        function.predictedFeatureName = model.description.predictedFeatureName
        function.predictedProbabilitiesName = model.description.predictedProbabilitiesName
    description.defaultFunctionName = "main" if "main" in model.mlProgram.functions else description.functions[0].name
    return description


def build_bundle_files(package: str | Path, *, dialect: str = "1.0", build_info: dict[str, str] | None = None,
                       generated_class_name: str | None = None) -> tuple[dict[str, bytes], list[tuple[Path, str]]]:
    """The bundle's generated files (relative path -> bytes) and the weight files to copy
    (source, relative destination), without touching the output directory."""
    if dialect not in DIALECTS:
        raise CompileError(f"unknown MIL dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    source = read_package(package)
    # validates every referenced weight file (records, dtypes, sizes) before anything is written
    referenced = check_blob_references(source.model_dir, source.model.mlProgram, source.model_path)
    model = source.model
    info = dict(DEFAULT_BUILD_INFO if build_info is None else build_info)

    description = model.description if dialect == "1.0" else _with_function_descriptions(model)
    name = generated_class_name or class_name(Path(package).name.removesuffix(".mlpackage"))
    files = {
        "model.mil": print_program(model.mlProgram, dialect=dialect, build_info=info).encode("utf-8"),
        "coremldata.bin": build_coremldata(model.specificationVersion, description),
        "analytics/coremldata.bin": build_analytics(source.model_bytes),
        "metadata.json": metadata_json_text(build_metadata(model, generated_class_name=name)).encode("utf-8"),
    }
    # Only the weight files the program references travel (byte-identical), as coremlc does;
    # anything else in weights/ stays behind.
    copies = [(source.model_dir / relative, relative) for relative in sorted(referenced)]
    return files, copies


def _copy_checked(source: Path, target: Path) -> None:
    """Copy a weight file without following a link (it was validated as a regular file; a swap
    since then is refused, not followed)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CompileError(f"{source}: cannot read weight file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
        size = os.fstat(reader.fileno()).st_size
        copied = 0
        try:  # in the kernel (no round trip of a GB-size weight file through user space)
            while copied < size:
                sent = os.sendfile(writer.fileno(), reader.fileno(), copied, size - copied)
                if sent == 0:
                    break
                copied += sent
        except OSError:
            if copied:
                raise
        if copied < size:  # a file system without sendfile, or a file that shrank
            reader.seek(copied)
            writer.seek(copied)
            shutil.copyfileobj(reader, writer, 1 << 20)


def compile_package(package: str | Path, output: str | Path, *, dialect: str = "1.0",
                    build_info: dict[str, str] | None = None, generated_class_name: str | None = None) -> Path:
    """Compile `package` (an `.mlpackage`) into the `.mlmodelc` directory `output`.

    dialect: "1.0" (coremlc 3500.x, verified byte for byte) or "1.3" (newer coremlc, unverified).
    build_info: the compiler's own buildInfo entries; default `DEFAULT_BUILD_INFO`.
    generated_class_name: default derived from the package's file name, as Xcode does.
    """
    files, copies = build_bundle_files(package, dialect=dialect, build_info=build_info,
                                       generated_class_name=generated_class_name)
    output = Path(output)
    with atomic_dir(output, replaceable=is_mlmodelc, kind="an .mlmodelc bundle", inputs=[package]) as staging:
        for relative, data in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for source, relative in copies:
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_checked(source, target)
    return output
