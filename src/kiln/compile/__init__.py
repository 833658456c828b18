"""kiln's own `.mlpackage` -> `.mlmodelc` compiler, matching Apple's `coremlc` 3500.x byte for byte
(`kiln.compile.compiler`), with a MIL text printer and parser (`kiln.compile.mil_text`) and a
`coremldata.bin` writer and reader (`kiln.compile.coremldata`).

Names are loaded on first use: the compiler needs coremltools (seconds to import), and
`kiln.compile.cli` must stay cheap to import when the main CLI registers its commands.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compile_package": "kiln.compile.compiler",
    "DEFAULT_BUILD_INFO": "kiln.compile.compiler",
    "compare_bundles": "kiln.compile.compare",
    "read_coremldata": "kiln.compile.coremldata",
    "parse_program": "kiln.compile.mil_text",
    "print_program": "kiln.compile.mil_text",
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
