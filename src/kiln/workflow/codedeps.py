"""The kiln source files a job's code depends on, derived from its imports (not listed by hand).

:func:`module_files` walks ``import`` / ``from … import`` statements statically (``ast``), at any
depth (function-level imports included, since jobs import heavy modules lazily), following only
modules inside the ``kiln`` package. A string constant that names an existing kiln module (e.g. a
lazy-export table ``{"compile_package": "kiln.compile.compiler"}`` or a list of CLI command modules)
counts as an import: that is how kiln loads modules dynamically. Importing ``kiln.a.b`` runs
``kiln/__init__.py`` and ``kiln/a/__init__.py`` first, so package ``__init__`` files are included too.

The walk reads the files on disk under ``src`` (the checkout Snakemake runs in, whose files are the
rules' ``code`` inputs), never imports them, and caches each file's imports per (path, size, mtime)
in ``.kiln/cache/imports.json``, so Snakemake's start-up parses only files edited since the last run.

A family is a package whose modules say which part of it they are (:data:`kiln.family.PARTS`:
``checkpoint``, ``build``, ``feeds``, ``judge``); its ``__init__`` imports every part to assemble ``FAMILY``. A
stage depends only on the parts it runs (:data:`STAGE_PARTS`): the walk does not follow a family
``__init__``'s import of another part (the fetch job runs no wrapper, the prepare job no metric), so
an edit to a family's judging code rebuilds no network. Every other import is followed, whatever
part it reaches (a wrapper that calls judging code depends on it).

A job does not list those files as inputs: it depends on its stage's **code stamp**
(:func:`sync_code_stamps`), ``.kiln/stamps/code/<stage>[-<family>].json``, which holds the sha256 of
every file of the closure and is rewritten only when one of them changes content. Snakemake's DAG
then holds one code input per job instead of 30-90 source files (a no-op start-up is a quarter of a
second faster), and a source file rewritten with the same bytes (a checkout, a touch) rebuilds
nothing. The content ledger covers the stamps like every other input, so an edit reverted before
the next build plans nothing either.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path

from kiln.foundation.errors import KilnError
from kiln.family import FAMILIES_PREFIX, PARTS, part_of
from kiln.foundation.fsutil import write_json

PACKAGE = "kiln"
#: parsed imports per source file, valid while the file's size and mtime are unchanged
CACHE_PATH = Path(".kiln") / "cache" / "imports.json"
CACHE_VERSION = 2
#: the code stamps jobs depend on (see the module docstring)
CODE_STAMP_ROOT = Path(".kiln") / "stamps" / "code"
_MODULE_NAME = re.compile(rf"^{PACKAGE}(\.[A-Za-z_][A-Za-z0-9_]*)+$")

#: what each workflow stage runs, as root modules (``{family}`` is the model's family module); a
#: stage's code dependencies are these modules' transitive kiln imports
STAGE_ROOTS: dict[str, tuple[str, ...]] = {
    # a random-initialised source is built by its family's builder (hub, package and path sources
    # run no kiln code whose edit could change the fetched bytes: they have no code inputs)
    "fetch_random": ("kiln.sources", "kiln.models.{family}"),
    # the only stage that runs the family's wrappers on the checkpoint (and traces them)
    "prepare": ("kiln.models.{family}", "kiln.export.convert"),
    # the family's validation feeds run through the traced programs
    "reference": ("kiln.models.{family}", "kiln.validate.reference", "kiln.validate.backends"),
    # converts a traced program: no family code
    "export": ("kiln.export.convert", "kiln.export.package", "kiln.export.torch_ops"),
    "compile": ("kiln.compile.stage",),
    "validate": ("kiln.models.{family}", "kiln.validate.run", "kiln.validate.backends",
                 "kiln.validate.reference"),
    # builds, compiles and scores a variant, recording its outputs (no family metric: the summary's)
    "quantize": ("kiln.models.{family}", "kiln.quantize.run", "kiln.validate.reference"),
    # the family's task metrics of every variant, its task with each variant swapped in, the tables
    "quantization_summary": ("kiln.models.{family}", "kiln.quantize.run", "kiln.quantize.summary",
                             "kiln.validate.reference", "kiln.validate.backends", "kiln.distribution.report"),
    # built artifacts against the consumer's contract (names checked against the family's specs)
    "contract": ("kiln.distribution.contracts", "kiln.models.{family}"),
}

#: the parts of a family package (:data:`kiln.family.PARTS`) a stage's jobs run, where not all: the
#: fetch job builds a random checkpoint, the prepare job builds and traces the network (its
#: faithfulness checks included), the reference job makes the validation inputs and the task's torch
#: run, a quantize job streams the variant with the component's state pairs; validate, the
#: quantization summary and contract run every part
STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "fetch_random": ("checkpoint",),
    "prepare": ("build",),
    "reference": ("build", "feeds"),
    "quantize": ("build",),
}


class CodeDepsError(KilnError):
    """A root module or an import that cannot be resolved to a kiln source file."""


def module_path(module: str, src: Path) -> Path | None:
    """``src/kiln/a/b.py`` or ``src/kiln/a/b/__init__.py`` for ``kiln.a.b``; None if neither exists."""
    base = os.path.join(str(src), *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name ``from <node.module> import …`` refers to inside ``module``."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _ImportCache:
    """``{path: [size, mtime_ns, module, [imports], sha256]}``, loaded once per process, saved when it
    grew."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] | None = None
        self.dirty = False

    def _load(self) -> dict[str, list]:
        if self.entries is None:
            try:
                data = json.loads(self.path.read_text())
                self.entries = data["files"] if data.get("version") == CACHE_VERSION else {}
            except (OSError, ValueError, KeyError, AttributeError):
                self.entries = {}  # no cache yet, or unreadable: parse again
        return self.entries

    def _entry(self, module: str, path: Path) -> list:
        stat = path.stat()
        key = path.as_posix()
        entry = self._load().get(key)
        if entry and len(entry) == 5 and entry[:3] == [stat.st_size, stat.st_mtime_ns, module]:
            return entry
        data = path.read_bytes()
        entry = [stat.st_size, stat.st_mtime_ns, module, list(_parse_imports(path, module, data)),
                 hashlib.sha256(data).hexdigest()]
        self.entries[key] = entry
        self.dirty = True
        return entry

    def imports(self, module: str, path: Path) -> tuple[str, ...]:
        return tuple(self._entry(module, path)[3])

    def sha256(self, module: str, path: Path) -> str:
        return self._entry(module, path)[4]

    def save(self) -> None:
        if self.dirty:
            write_json(self.path, {"version": CACHE_VERSION, "files": self.entries}, sort_keys=True)
            self.dirty = False


_CACHE = _ImportCache(CACHE_PATH)


def _parse_imports(path: Path, module: str, data: bytes) -> tuple[str, ...]:
    """Every kiln module ``module`` (source ``data``, read from ``path``) may import, as candidate names."""
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as exc:
        raise CodeDepsError(f"{path}: cannot parse ({exc.msg}, line {exc.lineno})") from exc
    is_package = path.name == "__init__.py"
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names.append(base)
            # ``from kiln.export import convert`` imports the submodule kiln.export.convert
            names.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            names.append(node.value)
    return tuple(sorted({n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}))


#: closures computed in this process: (roots, src) -> (files, their (size, mtime) signature)
_CLOSURES: dict[tuple, tuple[list[str], tuple]] = {}


def _signature(files: list[str]) -> tuple:
    out = []
    for file in files:
        try:
            stat = os.stat(file)
        except FileNotFoundError:
            return ()
        out.append((stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def module_files(*modules: str, src: str | Path = "src", parts: tuple[str, ...] | None = None) -> list[str]:
    """Every kiln source file the ``modules`` import transitively (themselves and the package
    ``__init__`` files on the way included), as sorted paths under ``src``. With ``parts`` (names
    of :data:`kiln.family.PARTS`), a family package's ``__init__`` leads only to those parts.

    A closure changes only when one of its files does, so it is reused while their sizes and mtimes
    are unchanged (Snakemake asks once per job)."""
    unknown = sorted(set(parts or ()) - set(PARTS))
    if unknown:
        raise CodeDepsError(f"unknown family part(s) {unknown} (known: {', '.join(PARTS)})")
    key = (modules, str(src), parts)
    known = _CLOSURES.get(key)
    if known and _signature(known[0]) == known[1]:
        return list(known[0])
    files = _closure(modules, Path(src), parts)
    _CLOSURES[key] = (files, _signature(files))
    return list(files)


def _module_of(file: str, src: Path) -> str:
    rel = Path(file).relative_to(src).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _family_package(module: str, path: Path) -> bool:
    """Whether ``module`` is a family package's ``__init__`` (``kiln.models.<family>``)."""
    return path.name == "__init__.py" and module.startswith(FAMILIES_PREFIX) \
        and "." not in module[len(FAMILIES_PREFIX):]


def _closure(modules: tuple[str, ...], src: Path, parts: tuple[str, ...] | None = None) -> list[str]:
    seen: dict[str, Path] = {}
    not_modules: set[str] = set()
    pending: list[str] = []
    for root in modules:
        if module_path(root, src) is None:
            raise CodeDepsError(f"module {root!r} has no source file under {src}/")
        pending.extend(_with_parents(root))
    while pending:
        module = pending.pop()
        if module in seen or module in not_modules:
            continue
        path = module_path(module, src)
        if path is None:
            not_modules.add(module)  # ``from kiln.x import name``: ``kiln.x.name`` is an attribute
            continue
        seen[module] = path
        assembles = parts is not None and _family_package(module, path)
        for name in _CACHE.imports(module, path):
            if assembles and part_of(name) not in (None, *parts):
                continue  # the family's other parts: assembled into FAMILY, not run by this stage
            pending.extend(m for m in _with_parents(name) if m not in seen)
    _CACHE.save()
    return sorted(p.as_posix() for p in seen.values())


def stage_files(stage: str, family: str | None = None, src: str | Path = "src") -> list[str]:
    """The code dependencies of a workflow ``stage`` (a key of :data:`STAGE_ROOTS`) for a model of
    ``family``."""
    try:
        roots = STAGE_ROOTS[stage]
    except KeyError:
        raise CodeDepsError(f"no code roots for workflow stage {stage!r} (known: {', '.join(STAGE_ROOTS)})") \
            from None
    if family is None and any("{family}" in r for r in roots):
        raise CodeDepsError(f"workflow stage {stage!r} depends on a model family; pass family=")
    return module_files(*(r.format(family=family) for r in roots), src=src, parts=STAGE_PARTS.get(stage))


def code_stamp_path(stage: str, family: str | None = None) -> str:
    """Where the code stamp of ``stage`` (for a model of ``family``) lives, relative to the checkout."""
    return (CODE_STAMP_ROOT / (f"{stage}-{family}.json" if family else f"{stage}.json")).as_posix()


def code_stamp_content(stage: str, family: str | None = None, src: str | Path = "src") -> str:
    """The stamp's text: the stage, the family and the sha256 of every file :func:`stage_files` names."""
    digests = {file: _CACHE.sha256(_module_of(file, Path(src)), Path(file)) for file in stage_files(stage, family, src)}
    _CACHE.save()
    return json.dumps({"stage": stage, "family": family, "files": digests}, indent=1, sort_keys=True) + "\n"


def sync_code_stamps(stages: list[tuple[str, str | None]], src: str | Path = "src") -> dict[str, list[str]]:
    """Bring the code stamp of every ``(stage, family)`` up to date: a stamp is rewritten (a new
    mtime: its jobs are planned) only when its content changes. Returns the stamps ``changed`` and
    ``created``."""
    from kiln.foundation.fsutil import atomic_file

    report: dict[str, list[str]] = {"changed": [], "created": []}
    stages = list(dict.fromkeys(stages))
    key = _stamps_key(stages, Path(src))
    if _stamps_unchanged(key):
        return report
    for stage, family in stages:
        path = Path(code_stamp_path(stage, family))
        content = code_stamp_content(stage, family, src)
        try:
            current = path.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        if current == content:
            continue
        with atomic_file(path) as handle:
            handle.write(content)
        report["changed" if current is not None else "created"].append(str(path))
    _remember_stamps(key, [code_stamp_path(stage, family) for stage, family in stages])
    return report


#: the code stamps' digests, valid while no source file's (path, size, mtime) changed: an unchanged
#: tree skips the closures and the hashing (a no-op `snakemake -n` computes nothing)
STAMPS_CACHE_PATH = Path(".kiln") / "cache" / "code_stamps.json"


def _stamps_key(stages: list[tuple[str, str | None]], src: Path) -> str:
    listing = []
    for dirpath, dirnames, filenames in os.walk(src / PACKAGE):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(dirpath, name))
                listing.append((os.path.join(dirpath, name), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps([CACHE_VERSION, str(src), stages, listing]).encode()).hexdigest()


def _stamps_unchanged(key: str) -> bool:
    try:
        cached = json.loads(STAMPS_CACHE_PATH.read_text())
        if cached["key"] != key:
            return False
        return all(hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
                   for path, digest in cached["stamps"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _remember_stamps(key: str, paths: list[str]) -> None:
    write_json(STAMPS_CACHE_PATH, {"key": key, "stamps": {
        path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths}})


def date_created_stamps(created: list[str], src: str | Path = "src") -> None:
    """A code stamp that did not exist (a checkout that never had one) takes the mtime of the newest
    file it lists, as those files were the jobs' inputs before: outputs built after them stay up to
    date, outputs older than a file are rebuilt. (Call after the ledger has restored the files' mtimes.)"""
    for stamp in created:
        files = json.loads(Path(stamp).read_text())["files"]
        newest = max((os.stat(file).st_mtime_ns for file in files), default=None)
        if newest is not None:
            os.utime(stamp, ns=(newest, newest))
