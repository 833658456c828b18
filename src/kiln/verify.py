"""Reproducing a published build exactly: ``kiln verify <published folder | results/<model>>``.

The recorded build (a folder ``kiln publish`` staged, or a model's results in this checkout) names
its sources, settings and toolchain. :func:`verify`:

1. checks the folder holds what a reproduction needs (``kiln/provenance.json``, ``kiln/config.yaml``,
   ``kiln/toolchain.lock``, ``kiln/records/source.json``; for a results folder the checkout's
   ``config.yaml`` and ``constraints.txt``) and names what is missing;
2. compares the recorded toolchain (python, platform, torch, coremltools, numpy, NeMo, kiln version,
   the locked environment, the kiln commit) with this one and names every difference *before anything
   runs*;
3. rebuilds in a scratch directory: the workflow files of the recorded kiln commit (``git archive``
   when this repository has it, else this checkout, named), the recorded config, then
   ``snakemake all_<model>`` in a subprocess (sources fetched again from their recorded kind);
4. compares byte for byte every package and bundle (float and quantized) and source file, and value
   for value the parity and quantization figures, end-to-end results and facts (timings, paths and
   toolchain records excluded), reporting each as ``reproduced``, ``differing`` (with the first
   difference) or ``not_reproducible`` here (Apple's compiler or runtime on a machine without them).

A scratch directory that already holds the rebuild (``--workdir``) is brought up to date by the same
Snakemake run (usually nothing to do), so verifying again after editing a published file is quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from kiln import schemas
from kiln.errors import KilnError
from kiln.fsutil import sha256_file, write_json
from kiln.publish import KILN_DIR, REQUIRED_LOCK_FILES, TOOLCHAIN_LOCK, checkout_state

REPORT_SCHEMA_VERSION = 1
#: record keys that hold timings, machine paths or the toolchain record itself: never compared
UNCOMPARED_KEYS = frozenset({"latency", "seconds", "export_seconds", "toolchain", "platform", "staged_with",
                             "median_ms", "mean_ms", "p90_ms", "torch_latency", "path", "mtime_ns"})
#: the records whose figures are compared value for value (relative to the model's results)
VALUE_RECORDS = ("parity/*.json", "quantized/*/*.json", "quantization_summary.json", "end_to_end.json",
                 "prepared/facts.json", "reference/task.json", "contract.json")
#: toolchain entries compared before anything runs
TOOLCHAIN_KEYS = ("python", "platform", "torch", "coremltools", "numpy", "nemo_toolkit")


class VerifyError(KilnError):
    """A folder cannot be verified (something recorded is missing) or did not reproduce."""


@dataclass
class Item:
    name: str          # what was compared (published path or record)
    kind: str          # package | bundle | source | record
    status: str        # reproduced | differing | not_reproducible
    detail: str = ""


@dataclass
class Recorded:
    """What a build recorded, wherever it came from."""

    folder: Path
    model: str
    config_text: str
    lock: Path
    records: Path                     # holds source.json, parity/, quantized/, ... as in results/<model>
    artifacts: list[dict]             # {path (in folder), source (results-relative), kind, component, strategy}
    checkout_commit: str | None
    kiln_commit: str | None
    results_dir: str
    components: tuple[str, ...] = ()   # the model's configured components (records of others are leftovers)

    def record(self, rel: str) -> dict:
        return read_json(self.records / rel)


def read_json(path: Path) -> Any:
    """A JSON file of the folder or the rebuild, within bounds (:mod:`kiln.jsonio`: size, UTF-8,
    nesting); a bad one is a :class:`VerifyError` naming it."""
    from kiln import jsonio

    try:
        return jsonio.read(path)
    except jsonio.JsonFileError as exc:
        raise VerifyError(str(exc)) from None


# -- reading what was recorded ---------------------------------------------------------------------

def _missing(folder: Path, names) -> list[str]:
    return [n for n in names if not (folder / n).exists()]


def read_published(folder: Path) -> Recorded:
    kiln_dir = folder / KILN_DIR
    missing = _missing(kiln_dir, REQUIRED_LOCK_FILES)
    if missing:
        raise VerifyError(f"{folder}: cannot verify: missing {', '.join(f'{KILN_DIR}/{m}' for m in missing)} "
                          f"(a folder staged by `kiln publish` records them)")
    provenance = read_json(kiln_dir / "provenance.json")
    schemas.check(provenance, "provenance", VerifyError, str(kiln_dir / "provenance.json"))
    return Recorded(folder=folder, model=provenance["model"], config_text=_config_text(kiln_dir / "config.yaml"),
                    lock=kiln_dir / "toolchain.lock", records=kiln_dir / "records",
                    artifacts=[{k: a[k] for k in ("path", "source", "kind", "component", "strategy")}
                               for a in provenance["artifacts"]],
                    checkout_commit=provenance["kiln"]["checkout_commit"],
                    kiln_commit=provenance["kiln"]["git_commit"], results_dir=provenance["results_dir"],
                    components=tuple(provenance["names"]))


def _config_text(path: Path) -> str:
    """The recorded config's text, after reading it within bounds (:mod:`kiln.yamlio`): the rebuild
    hands it to Snakemake, whose own loader would walk an alias bomb's expansion with no end."""
    from kiln import yamlio

    try:
        text = yamlio.read_text(path)
        yamlio.parse(path, text)
    except yamlio.YamlFileError as exc:
        raise VerifyError(str(exc)) from None
    return text


def read_results(folder: Path, checkout: Path) -> Recorded:
    """A model's results folder in ``checkout`` (e.g. after ``dvc pull``): the checkout's config.yaml
    and toolchain lock are its settings and environment."""
    from kiln.config import load_config

    missing = _missing(folder, ("source.json", "metadata.json"))
    missing += [str(checkout / n) for n in ("config.yaml", TOOLCHAIN_LOCK) if not (checkout / n).is_file()]
    if missing:
        raise VerifyError(f"{folder}: cannot verify: missing {', '.join(missing)}")
    config = load_config(checkout / "config.yaml")
    model = folder.resolve().name
    config.model(model)
    metadata = read_json(folder / "metadata.json")
    artifacts = []
    for component, comp in config.model(model).components.items():   # what the config builds, not leftovers
        variants = [(None, "")] + [(s, f"quantized/{s}/") for s in comp.quantize["strategies"]]
        for strategy, prefix in variants:
            for suffix, kind in ((".mlmodelc", "bundle"), (".mlpackage", "package")):
                rel = f"{prefix}{component}{suffix}"
                if strategy is None or (folder / rel).exists():   # a skipped strategy has no files
                    artifacts.append({"path": rel, "source": f"{model}/{rel}", "component": component,
                                      "strategy": strategy, "kind": kind})
    return Recorded(folder=folder, model=model, config_text=_config_text(checkout / "config.yaml"),
                    lock=checkout / TOOLCHAIN_LOCK, records=folder, artifacts=artifacts,
                    checkout_commit=None, kiln_commit=metadata["toolchain"]["kiln"]["git_commit"],
                    results_dir=config.results_dir, components=tuple(config.model(model).components))


def read_recorded(target: str | Path, checkout: str | Path = ".") -> Recorded:
    folder = Path(target)
    if not folder.is_dir():
        raise VerifyError(f"{folder}: not a directory (a published model folder or results/<model>)")
    if (folder / KILN_DIR).is_dir():
        return read_published(folder)
    if (folder / "metadata.json").is_file() or (folder / "source.json").is_file():
        return read_results(folder, Path(checkout))
    raise VerifyError(f"{folder}: cannot verify: missing {KILN_DIR}/provenance.json (a published folder) and "
                      f"metadata.json (a results folder)")


# -- the toolchain, before anything runs -----------------------------------------------------------

def toolchain_differences(recorded: Recorded, checkout: Path) -> list[str]:
    from kiln.provenance import toolchain

    current = toolchain()
    metadata = recorded.record("metadata.json") if (recorded.records / "metadata.json").is_file() else \
        read_json(recorded.folder / "metadata.json")
    then = metadata["toolchain"]
    out = [f"{key} {current.get(key)} (recorded {then.get(key)})" for key in TOOLCHAIN_KEYS
           if then.get(key) != current.get(key)]
    if then["kiln"]["version"] != current["kiln"]["version"]:
        out.append(f"kiln {current['kiln']['version']} (recorded {then['kiln']['version']})")
    here = checkout / TOOLCHAIN_LOCK
    if not here.is_file():
        out.append(f"no {TOOLCHAIN_LOCK} in {checkout} to compare with the recorded lock")
    elif sha256_file(here) != sha256_file(recorded.lock):
        out.append(f"{TOOLCHAIN_LOCK} differs from the recorded toolchain lock ({_first_line_difference(recorded.lock, here)})")
    return out


def _first_line_difference(a: Path, b: Path) -> str:
    left, right = a.read_text().splitlines(), b.read_text().splitlines()
    for number, (x, y) in enumerate(zip(left, right), 1):
        if x != y:
            return f"line {number}: recorded {x!r}, here {y!r}"
    return f"recorded {len(left)} lines, here {len(right)}"


# -- the rebuild -----------------------------------------------------------------------------------

def _available(commit: str, checkout: Path) -> bool:
    return bool(commit) and subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=checkout,
                                           capture_output=True).returncode == 0


def _populate(scratch: Path, recorded: Recorded, checkout: Path) -> str:
    """The workflow files of the recorded commit into ``scratch``; returns where they came from. The
    commit kiln recorded while building comes first, then the commit of the checkout that staged the
    folder; when this repository has neither, this checkout's files are used and named."""
    scratch.mkdir(parents=True, exist_ok=True)
    recorded_commits = [c or "" for c in (recorded.kiln_commit, recorded.checkout_commit)]
    candidates = [c.removesuffix("-dirty") for c in recorded_commits]
    chosen = next((i for i, c in enumerate(candidates) if _available(c, checkout)), None)
    if chosen is not None:
        commit = candidates[chosen]
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=checkout, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        origin = f"the recorded commit {commit}"
        if recorded_commits[chosen].endswith("-dirty"):
            origin += " (the build had uncommitted changes, which no commit holds)"
    else:
        files = subprocess.run(["git", "ls-files"], cwd=checkout, capture_output=True, text=True,
                               check=True).stdout.split()
        for rel in files:
            if (checkout / rel).is_file():
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(checkout / rel, scratch / rel)
        here = checkout_state(checkout)["commit"]
        origin = (f"this checkout at {here} (neither recorded commit, {', '.join(c or '?' for c in candidates)}, "
                  f"is in this repository)")
    (scratch / "config.yaml").write_text(recorded.config_text)
    (scratch / ".kiln-verify-origin").write_text(origin + "\n")
    return origin


def _snakemake() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else (shutil.which("snakemake") or "snakemake")


def rebuild(recorded: Recorded, scratch: Path, checkout: Path, cores: int, log) -> str:
    origin_file = scratch / ".kiln-verify-origin"
    origin = origin_file.read_text().strip() if origin_file.is_file() else _populate(scratch, recorded, checkout)
    log(f"rebuilding {recorded.model} in {scratch} from {origin}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(scratch / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([_snakemake(), "--cores", str(cores), f"all_{recorded.model}"], cwd=scratch, env=env,
                            capture_output=True, text=True)
    (scratch / "verify-snakemake.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise VerifyError(f"the rebuild of {recorded.model} in {scratch} failed (log: "
                          f"{scratch / 'verify-snakemake.log'}):\n{tail}")
    return origin


# -- comparisons -----------------------------------------------------------------------------------

def _files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {"": root}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def first_tree_difference(recorded: Path, rebuilt: Path) -> str | None:
    """None when the two files or trees have identical bytes, else the first difference."""
    if not rebuilt.exists():
        return "the rebuild did not produce it"
    if not recorded.exists():
        return "missing from the recorded folder"
    left, right = _files(recorded), _files(rebuilt)
    for rel in sorted(set(left) | set(right)):
        if rel not in right:
            return f"{rel or recorded.name}: only in the recorded artifact"
        if rel not in left:
            return f"{rel or recorded.name}: only in the rebuild"
        a, b = left[rel].read_bytes(), right[rel].read_bytes()
        if a != b:
            offset = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            if offset == min(len(a), len(b)):
                return f"{rel or recorded.name}: {len(a)} bytes recorded, {len(b)} rebuilt (equal up to there)"
            return (f"{rel or recorded.name}: byte {offset}: recorded 0x{a[offset]:02x}, rebuilt 0x{b[offset]:02x} "
                    f"({len(a)} bytes)")
    return None


def _apple_backend(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(("coreml_", "apple"))


def value_differences(recorded: Any, rebuilt: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(kind, text) for every difference: kind ``differing`` or ``not_reproducible`` (values measured
    on Apple's runtime, which this machine lacks)."""
    if isinstance(recorded, dict) and isinstance(rebuilt, dict):
        if _apple_backend(recorded.get("backend")) and not _apple_here():
            if recorded != rebuilt:
                yield "not_reproducible", f"{where}: measured on Apple's runtime ({recorded['backend']})"
            return
        for key in sorted(set(recorded) | set(rebuilt)):
            if key in UNCOMPARED_KEYS:
                continue
            here = f"{where}.{key}" if where else str(key)
            if _apple_backend(key) and not _apple_here():
                # None or a string (the reason it is absent) means nothing was measured there
                if recorded.get(key) is not None and not isinstance(recorded.get(key), str):
                    yield "not_reproducible", f"{here}: measured on Apple's runtime"
                continue
            if key not in rebuilt:
                yield "differing", f"{here}: recorded {_short(recorded[key])}, absent from the rebuild"
            elif key not in recorded:
                yield "differing", f"{here}: absent from the record, rebuilt {_short(rebuilt[key])}"
            else:
                yield from value_differences(recorded[key], rebuilt[key], here)
    elif isinstance(recorded, list) and isinstance(rebuilt, list):
        if not _apple_here():   # rows of Apple's backends (parity on macOS) cannot be redone here
            apple = [r for r in recorded if isinstance(r, dict) and _apple_backend(r.get("backend"))]
            for row in apple:
                yield "not_reproducible", f"{where}: measured on Apple's runtime ({row['backend']})"
            recorded = [r for r in recorded if not (isinstance(r, dict) and _apple_backend(r.get("backend")))]
            rebuilt = [r for r in rebuilt if not (isinstance(r, dict) and _apple_backend(r.get("backend")))]
        if len(recorded) != len(rebuilt):
            yield "differing", f"{where}: {len(recorded)} entries recorded, {len(rebuilt)} rebuilt"
            return
        for index, (a, b) in enumerate(zip(recorded, rebuilt)):
            yield from value_differences(a, b, f"{where}[{index}]")
    elif recorded != rebuilt or type(recorded) is not type(rebuilt):
        yield "differing", f"{where}: recorded {_short(recorded)}, rebuilt {_short(rebuilt)}"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _apple_here() -> bool:
    from kiln.validate.backends import apple_available

    return apple_available() is None


def _compiled_by_apple(recorded: Recorded, item: dict) -> bool:
    """Whether a recorded bundle came from Apple's coremlcompiler (absent on this machine)."""
    if item["kind"] != "bundle":
        return False
    rel = f"compile/{item['component']}.json" if item["strategy"] is None else \
        f"quantized/{item['strategy']}/{item['component']}.json"
    path = recorded.records / rel
    if not path.is_file():
        return False
    record = read_json(path)
    compiler = record.get("compiler") or (record.get("bundle") or {}).get("compiler")
    from kiln.compile.apple import find_coremlcompiler

    return compiler == "apple" and find_coremlcompiler() is None


def compare(recorded: Recorded, scratch: Path) -> list[Item]:
    rebuilt_dir = scratch / recorded.results_dir
    items: list[Item] = []
    then = recorded.record("source.json")
    now_path = rebuilt_dir / recorded.model / "source.json"
    now = read_json(now_path) if now_path.is_file() else {"files": []}
    now_files = {f["role"]: f for f in now["files"]}
    for entry in then["files"]:
        got = now_files.get(entry["role"])
        if got is None:
            items.append(Item(f"source {entry['role']}", "source", "differing", "the rebuild fetched no such file"))
        elif got["sha256"] != entry["sha256"]:
            items.append(Item(f"source {entry['role']}", "source", "differing",
                              f"sha256 {got['sha256']} rebuilt, {entry['sha256']} recorded"))
        else:
            items.append(Item(f"source {entry['role']}", "source", "reproduced", entry["sha256"]))
    for artifact in recorded.artifacts:
        if _compiled_by_apple(recorded, artifact):
            items.append(Item(artifact["path"], artifact["kind"], "not_reproducible",
                              "compiled by Apple's coremlcompiler, which this machine lacks"))
            continue
        difference = first_tree_difference(recorded.folder / artifact["path"], rebuilt_dir / artifact["source"])
        items.append(Item(artifact["path"], artifact["kind"], "differing" if difference else "reproduced",
                          difference or ""))
    for pattern in VALUE_RECORDS:
        for path in sorted(recorded.records.glob(pattern)):
            rel = path.relative_to(recorded.records).as_posix()
            if "/" in rel and rel.split("/")[0] in ("parity", "quantized") and path.stem not in recorded.components:
                continue
            mine = rebuilt_dir / recorded.model / rel
            if not mine.is_file():
                items.append(Item(rel, "record", "differing", "the rebuild wrote no such record"))
                continue
            found = list(value_differences(read_json(path), read_json(mine)))
            differing = [text for kind, text in found if kind == "differing"]
            apple = [text for kind, text in found if kind == "not_reproducible"]
            if differing:
                items.append(Item(rel, "record", "differing", f"{differing[0]} ({len(differing)} value(s) differ)"))
            else:
                items.append(Item(rel, "record", "reproduced", ""))
            if apple:
                items.append(Item(rel, "record", "not_reproducible", f"{apple[0]} ({len(apple)} value(s))"))
    return items


# -- the command -----------------------------------------------------------------------------------

def verify(target: str | Path, *, workdir: str | Path | None = None, cores: int = 2, checkout: str | Path = ".",
           report: str | Path | None = None, log=print) -> dict:
    checkout = Path(checkout).resolve()
    recorded = read_recorded(target, checkout)
    differences = toolchain_differences(recorded, checkout)
    if differences:
        log("toolchain differs from the recorded one (the rebuild may differ because of it):")
        for line in differences:
            log(f"  {line}")
    else:
        log("toolchain: as recorded")
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"kiln-verify-{recorded.model}-"))
    origin = rebuild(recorded, scratch.resolve(), checkout, cores, log)
    items = compare(recorded, scratch.resolve())
    counts = {s: sum(1 for i in items if i.status == s) for s in ("reproduced", "differing", "not_reproducible")}
    result = {"schema_version": REPORT_SCHEMA_VERSION, "model": recorded.model, "target": str(target),
              "scratch": str(scratch), "workflow_from": origin, "toolchain_differences": differences,
              "counts": counts, "items": [asdict(i) for i in items], "reproduced": counts["differing"] == 0}
    for item in items:
        log(f"{item.status:<17} {item.kind:<8} {item.name}{': ' + item.detail if item.detail and item.status != 'reproduced' else ''}")
    log(f"{recorded.model}: {counts['reproduced']} reproduced, {counts['differing']} differing, "
        f"{counts['not_reproducible']} not reproducible here")
    if report:
        write_json(report, result)
    return result


def verify_job(config, model: str, workdir: str | Path, out_report: str | Path, cores: int = 2) -> dict:
    """The workflow's verify_<model>: results/<model> rebuilt in ``workdir``; fails when anything differs."""
    import logging

    logger = logging.getLogger("kiln.verify")
    result = verify(Path(config.results_dir) / model, workdir=workdir, cores=cores, report=out_report,
                    log=logger.info)
    if not result["reproduced"]:
        raise VerifyError(f"{model}: {result['counts']['differing']} item(s) differ from the rebuild "
                          f"(report: {out_report})")
    return result
