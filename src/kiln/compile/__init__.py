"""kiln's own `.mlpackage` -> `.mlmodelc` compiler, matching Apple's `coremlc` 3500.x byte for byte
(`kiln.compile.compiler`). The file formats it reads and writes (Manifest, blob storage, MIL text,
`coremldata.bin`) live in the format layer `kiln.coreml`, shared with the executor.

Names are loaded on first use: the compiler needs coremltools (seconds to import), and
`kiln.compile.cli` must stay cheap to import when the main CLI registers its commands.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compile_package": "kiln.compile.compiler",
    "DEFAULT_BUILD_INFO": "kiln.compile.compiler",
    "compare_bundles": "kiln.compile.compare",
    "read_coremldata": "kiln.coreml.coremldata",
    "parse_program": "kiln.coreml.mil_text.parser",
    "print_program": "kiln.coreml.mil_text.printer",
    "find_coremlcompiler": "kiln.compile.apple",
    "compile_with_apple": "kiln.compile.apple",
    "CompileError": "kiln.compile.errors",
    "PackageError": "kiln.compile.errors",
    "MilSyntaxError": "kiln.compile.errors",
    "UnsupportedValueError": "kiln.compile.errors",
    "CoremlDataError": "kiln.compile.errors",
    "AppleCompilerError": "kiln.compile.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln.compile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
