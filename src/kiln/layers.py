"""kiln's layers, bottom up: the one table of which module may import which.

A module may import modules of its own layer and of the layers below it, never above. Imports are
also the workflow's rebuild edges (:mod:`kiln.workflow.codedeps` derives each stage's code from
them), so an import that points up is both a layering mistake and a rebuild that should not happen.
``tests/test_layers.py`` reads every module's imports (including those inside functions) and fails
on any that points up, and on any module this table does not place.

A module belongs to the layer of the longest prefix that names it (``kiln.mil.cli`` is command
line although ``kiln.mil`` is the executor). Imports only: this module imports nothing of kiln.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    name: str
    serves: str
    modules: tuple[str, ...]


#: bottom first
LAYERS: tuple[Layer, ...] = (
    Layer("foundation", "typed errors, atomic files, bounded YAML/JSON reads, failpoints, schemas, WAV "
          "files, task labels, this table",
          ("kiln", "kiln.foundation", "kiln.schemas", "kiln.audio", "kiln.tasks", "kiln.layers")),
    Layer("integrity", "content digests, the integrity ledger of artifacts, build provenance",
          ("kiln.integrity",)),
    Layer("format", "Core ML's files: Manifest, protobuf, MIL text, weight blobs, coremldata.bin",
          ("kiln.coreml",)),
    Layer("executor and compiler", "running a Core ML program on Linux; compiling .mlpackage to .mlmodelc",
          ("kiln.mil", "kiln.compile")),
    Layer("configuration", "config.yaml, read strictly and checked against its schema; where every "
          "artifact lives", ("kiln.config", "kiln.layout")),
    Layer("family spec", "what a model family declares: components, feeds, metrics, state",
          ("kiln.family",)),
    Layer("build and judge", "sources (and the Hub client), export to Core ML, validation, quantization",
          ("kiln.sources", "kiln.export", "kiln.validate", "kiln.quantize")),
    Layer("families", "one package per model family", ("kiln.models",)),
    Layer("distribution", "consumer contracts, reports, publishing, verify",
          ("kiln.distribution",)),
    Layer("workflow", "the jobs Snakemake runs, plans, stamps, pulls", ("kiln.workflow",)),
    Layer("command line", "kiln's commands and what they generate",
          ("kiln.cli", "kiln.scaffold", "kiln.mil.cli", "kiln.compile.cli", "kiln.docs")),
)


def layer_of(module: str) -> int | None:
    """Index into :data:`LAYERS` of the longest prefix naming ``module``; None if none does."""
    best, best_len = None, -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer.modules:
            # "kiln" places the package face only, not every module under it
            covers = module == prefix or (prefix != "kiln" and module.startswith(prefix + "."))
            if covers and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, src: Path) -> list[tuple[str, int]]:
    """(module, line) of every kiln import in ``path``, at any depth (function-level imports too)."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # `from kiln.x import y` imports the module kiln.x.y when there is one
                sub = f"{target}.{alias.name}"
                found.append((sub if _exists(sub, src) else target, node.lineno))
    kiln_imports = [(m, line) for m, line in found if m == "kiln" or m.startswith("kiln.")]
    return sorted(set(kiln_imports), key=lambda item: (item[1], item[0]))


def _exists(module: str, src: Path) -> bool:
    base = src.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}: {self.why}"


def violations(src: Path) -> list[Violation]:
    """Every import under ``src/kiln`` that points up a layer, and every module no layer places."""
    found = []
    for path in sorted((src / "kiln").rglob("*.py")):
        module = module_name(path, src)
        own = layer_of(module)
        if own is None:
            found.append(Violation(module, 0, "-", "no layer of kiln.layers.LAYERS places this module"))
            continue
        for imported, line in imports_of(path, src):
            theirs = layer_of(imported)
            if theirs is not None and theirs > own:
                found.append(Violation(module, line, imported,
                                       f"'{LAYERS[own].name}' may not import '{LAYERS[theirs].name}' above it"))
    return found
