"""Reproducing a published build exactly: ``kiln verify <published folder | results/<model>>``.

The recorded build (a folder ``kiln publish`` staged, or a model's results in this checkout) names
its sources, settings and toolchain. :func:`verify`:

1. checks the folder holds what a reproduction needs (``kiln/provenance.json``, ``kiln/config.yaml``,
   ``kiln/toolchain.lock``, ``kiln/records/source.json``; for a results folder the checkout's
   ``config.yaml`` and ``constraints.txt``) and nothing read through a link (a symbolic link or special
   file anywhere in the folder is refused by name before anything runs);
2. compares the recorded toolchain (python, platform, torch, coremltools, numpy, NeMo, kiln version,
   the locked environment, the kiln commit) with this one and names every difference *before anything
   runs*;
3. rebuilds in a scratch directory (``--workdir``: a new or empty directory, or one verify made, marked
   by ``.kiln-verify``; never another directory): the workflow files of the recorded kiln commit
   (``git archive`` when this repository has it, else this checkout, named), the recorded config, then
   ``snakemake stage_<model>`` in a subprocess under a time limit (``--timeout``): the whole build and
   its staging, so the rebuild's own published folder says what must be there;
4. accounts for every file of the folder against the rebuild's folder (a results folder is staged into
   the scratch directory first): packages and bundles (float and quantized), side files and plots byte
   for byte, job records and reports value for value (paths and toolchain records excluded; timings named),
   the model card regenerated from the verified records, ``provenance.json`` with only where and by whom
   it was staged excluded. Each is ``reproduced``, ``differing`` (with the first difference: a file
   missing from the folder, one the rebuild does not make, a changed byte or value) or
   ``not_reproducible`` here with the reason (Apple's compiler or runtime on a machine without them,
   timings, the DVC lock of the staging checkout, git's or the Hub's bookkeeping of a download).

A scratch directory that already holds the rebuild (``--workdir``) is brought up to date by the same
Snakemake run (usually nothing to do), so verifying again after editing a published file is quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from kiln import schemas
from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import irregular_entries, sha256_file, write_json
from kiln.distribution.publish import KILN_DIR, REQUIRED_LOCK_FILES, TOOLCHAIN_LOCK, checkout_state

REPORT_SCHEMA_VERSION = 2
#: record keys that hold timings, machine paths or the toolchain record itself: never compared
UNCOMPARED_KEYS = frozenset({"latency", "seconds", "export_seconds", "toolchain", "platform", "staged_with",
                             "median_ms", "mean_ms", "p90_ms", "torch_latency", "path", "mtime_ns"})
#: those of them that hold measured timings: figures (the card shows them) that no second run repeats,
#: so a difference is named not reproducible rather than passed over
TIMING_KEYS = frozenset({"latency", "seconds", "export_seconds", "median_ms", "mean_ms", "p90_ms", "torch_latency"})
#: provenance.json keys that say where, when and by whom a folder was staged (not what it holds)
PROVENANCE_ENVIRONMENT = ("kiln", "toolchain", "staged_with", "repo_id", "locks")
#: values of a record that differ between two builds of the same bytes, with the reason
UNREPRODUCIBLE_VALUES = {
    "kiln/records/prepared/prepare.json": (
        re.compile(r"^programs\.[^.]+\.sha256$"),
        "the traced TorchScript program's archive holds an id torch draws at random per process (the packages "
        "built from it are compared byte for byte)"),
}
#: plots of measured timings: redrawn from other timings on every run
TIMING_PLOT = re.compile(r"^plots/(.*_)?latency\.png$")
#: what a folder may hold that kiln did not stage: the bookkeeping of a download or of Snakemake
BOOKKEEPING = {
    ".git": "git's bookkeeping of a clone, not a file kiln staged",
    ".gitattributes": "the Hub's attributes file of the repo, not a file kiln staged",
    ".cache": "huggingface_hub's bookkeeping of a download, not a file kiln staged",
}
SNAKEMAKE_MARKER = ".snakemake_timestamp"
#: toolchain entries compared before anything runs
TOOLCHAIN_KEYS = ("python", "platform", "torch", "coremltools", "numpy", "nemo_toolkit")
#: the file that marks a scratch directory verify made (only such a directory is ever reused)
WORKDIR_MARKER = ".kiln-verify"
#: the rebuild's time limit when none is given (--timeout): a full-size model builds well within it
DEFAULT_TIMEOUT_S = 4 * 3600
#: the staged copy of a checkout's results/<model> inside the scratch directory
RECORDED_STAGING = "verify-recorded"
MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class VerifyError(KilnError):
    """A folder cannot be verified (something recorded is missing) or did not reproduce."""


@dataclass
class Item:
    name: str          # what was compared (path in the published folder)
    kind: str          # package | bundle | record | card | plot | file
    status: str        # reproduced | differing | not_reproducible
    detail: str = ""


@dataclass
class Recorded:
    """What a build recorded, wherever it came from."""

    folder: Path                      # the published folder compared (a results folder: its staging)
    model: str
    config_text: str
    lock: Path
    metadata: dict                    # metadata.json: the build's toolchain
    checkout_commit: str | None
    kiln_commit: str | None
    results: Path | None = None       # results/<model> of this checkout, staged into the workdir


# -- reading what was recorded ---------------------------------------------------------------------

def _missing(folder: Path, names) -> list[str]:
    return [n for n in names if not (folder / n).is_file()]


def _read_json(path: Path, what: str) -> Any:
    """A JSON file of the folder, within bounds (:mod:`kiln.foundation.jsonio`: size, UTF-8, nesting)."""
    from kiln.foundation import jsonio

    try:
        return jsonio.read(path)
    except jsonio.JsonFileError as exc:
        raise VerifyError(f"{path}: unreadable {what} ({exc.reason})") from None


def refuse_links(folder: Path) -> None:
    """Nothing is read through a link: a symbolic link or special file anywhere below ``folder`` is
    refused, named, before anything runs."""
    found = irregular_entries(folder)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise VerifyError(f"{folder}: cannot verify: {shown}; verify reads no file through a link (a published "
                          f"folder holds regular files only)")


def read_published(folder: Path) -> Recorded:
    refuse_links(folder)
    kiln_dir = folder / KILN_DIR
    missing = _missing(kiln_dir, REQUIRED_LOCK_FILES)
    if missing:
        raise VerifyError(f"{folder}: cannot verify: missing {', '.join(f'{KILN_DIR}/{m}' for m in missing)} "
                          f"(a folder staged by `kiln publish` records them)")
    where = kiln_dir / "provenance.json"
    provenance = _read_json(where, "provenance record")
    schemas.check(provenance, "provenance", VerifyError, str(where))
    kiln = provenance.get("kiln") if isinstance(provenance, dict) else None
    model = provenance.get("model") if isinstance(provenance, dict) else None
    if not isinstance(model, str) or not MODEL_NAME.match(model) or not isinstance(kiln, dict):
        raise VerifyError(f"{where}: not a provenance record kiln wrote (its 'model' must be a model name such as "
                          f"silero_vad, its 'kiln' the commits that built it)")
    metadata_file = kiln_dir / "records" / "metadata.json"
    metadata = _read_json(metadata_file, "metadata record") if metadata_file.is_file() else {}
    config_text = _config_text(kiln_dir / "config.yaml")
    return Recorded(folder=folder, model=model, config_text=config_text, lock=kiln_dir / "toolchain.lock",
                    metadata=metadata if isinstance(metadata, dict) else {},
                    checkout_commit=_text(kiln.get("checkout_commit")), kiln_commit=_text(kiln.get("git_commit")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _config_text(path: Path) -> str:
    """The recorded config's text, after reading it within bounds (:mod:`kiln.foundation.yamlio`): the rebuild
    hands it to Snakemake, whose own loader would walk an alias bomb's expansion with no end."""
    from kiln.foundation import yamlio

    try:
        text = yamlio.read_text(path)
        yamlio.parse(path, text)
    except yamlio.YamlFileError as exc:
        raise VerifyError(str(exc)) from None
    return text


def read_results(folder: Path, checkout: Path) -> Recorded:
    """A model's results folder in ``checkout`` (e.g. after ``dvc pull``): the checkout's config.yaml
    and toolchain lock are its settings and environment; it is staged as ``kiln publish`` would, then
    compared like a published folder."""
    from kiln.config import load_config
    from kiln import layout

    missing = _missing(folder, ("source.json", "metadata.json"))
    missing += [str(checkout / n) for n in ("config.yaml", TOOLCHAIN_LOCK) if not (checkout / n).is_file()]
    if missing:
        raise VerifyError(f"{folder}: cannot verify: missing {', '.join(missing)}")
    config = load_config(checkout / "config.yaml")
    model = Path(os.path.abspath(folder)).name
    config.model(model)
    expected = Path(os.path.abspath(checkout / layout.MODEL_DIR.path(config, model=model)))
    if Path(os.path.abspath(folder)) != expected:
        raise VerifyError(f"{folder}: not this checkout's results of {model} ({expected}); verify a results folder "
                          f"from the checkout that built it")
    metadata = _read_json(folder / "metadata.json", "metadata record")
    kiln = ((metadata.get("toolchain") or {}).get("kiln") or {}) if isinstance(metadata, dict) else {}
    return Recorded(folder=folder, model=model, config_text=_config_text(checkout / "config.yaml"),
                    lock=checkout / TOOLCHAIN_LOCK, metadata=metadata if isinstance(metadata, dict) else {},
                    checkout_commit=None, kiln_commit=_text(kiln.get("git_commit")), results=folder)


def read_recorded(target: str | Path, checkout: str | Path = ".") -> Recorded:
    folder = Path(target)
    if not folder.is_dir():
        raise VerifyError(f"{folder}: not a directory (a published model folder or results/<model>)")
    if (folder / KILN_DIR).is_dir() or (folder / KILN_DIR).is_symlink():
        return read_published(folder)
    if (folder / "metadata.json").is_file() or (folder / "source.json").is_file():
        return read_results(folder, Path(checkout))
    raise VerifyError(f"{folder}: cannot verify: missing {KILN_DIR}/provenance.json (a published folder) and "
                      f"metadata.json (a results folder)")


def check_published(folder: str | Path) -> tuple[list[dict], list[str]]:
    """``kiln check`` of a published folder: each artifact its ``kiln/provenance.json`` lists, found in
    the folder (its records under ``kiln/records/`` name the building checkout's paths, which a
    download does not have) against its recorded digest. Returns (artifacts, problems), each problem
    one line naming the file; a listed path leaving the folder is named, never read."""
    from kiln.integrity.artifacts import IntegrityError, verify_artifact
    from kiln.integrity.digests import DigestCache

    folder = Path(folder)
    irregular = irregular_entries(folder)
    problems = [f"{folder / entry}: not read; a published folder holds regular files only" for entry in irregular]
    irregular_paths = [entry.rsplit(" (", 1)[0] for entry in irregular]
    where = folder / KILN_DIR / "provenance.json"
    try:
        provenance = _read_json(where, "provenance record")
        schemas.check(provenance, "provenance", VerifyError, str(where))
    except VerifyError as exc:
        raise IntegrityError(str(exc)) from None
    artifacts = [a for a in provenance["artifacts"] if isinstance(a, dict)]
    cache = DigestCache.default()
    try:
        for artifact in artifacts:
            rel = artifact.get("path")
            parts = Path(rel).parts if isinstance(rel, str) else ()
            if not parts or Path(rel).is_absolute() or ".." in parts:
                problems.append(f"{rel!r}: a listed path leaving the folder (not read) [record: {where}]")
            elif not isinstance(artifact.get("sha256"), str):
                problems.append(f"{folder / rel}: listed without a sha256 [record: {where}]")
            elif not any(_under(entry, Path(rel).as_posix()) for entry in irregular_paths):   # named above
                try:
                    verify_artifact(folder / rel, artifact["sha256"], cache)
                except IntegrityError as exc:
                    problems.append(f"{exc} [record: {where}]")
    finally:
        cache.save()
    return artifacts, problems


# -- the toolchain, before anything runs -----------------------------------------------------------

def toolchain_differences(recorded: Recorded, checkout: Path) -> list[str]:
    from kiln.integrity.provenance import toolchain

    current = toolchain()
    then = recorded.metadata.get("toolchain")
    if not isinstance(then, dict):
        return ["the folder records no toolchain (metadata.json) to compare with this one"]
    out = [f"{key} {current.get(key)} (recorded {then.get(key)})" for key in TOOLCHAIN_KEYS
           if then.get(key) != current.get(key)]
    recorded_kiln = then.get("kiln") if isinstance(then.get("kiln"), dict) else {}
    if recorded_kiln.get("version") != current["kiln"]["version"]:
        out.append(f"kiln {current['kiln']['version']} (recorded {recorded_kiln.get('version')})")
    here = checkout / TOOLCHAIN_LOCK
    if not here.is_file():
        out.append(f"no {TOOLCHAIN_LOCK} in {checkout} to compare with the recorded lock")
    elif sha256_file(here) != sha256_file(recorded.lock):
        out.append(f"{TOOLCHAIN_LOCK} differs from the recorded toolchain lock ({_first_line_difference(recorded.lock, here)})")
    return out


def _first_line_difference(a: Path, b: Path) -> str:
    left = a.read_text(errors="replace").splitlines()
    right = b.read_text(errors="replace").splitlines()
    for number, (x, y) in enumerate(zip(left, right), 1):
        if x != y:
            return f"line {number}: recorded {_short(x)}, here {_short(y)}"
    return f"recorded {len(left)} lines, here {len(right)}"


# -- the scratch directory -------------------------------------------------------------------------

def _marker(scratch: Path) -> dict | None:
    """The marker verify left in ``scratch`` (a regular file naming verify), or None."""
    marker = scratch / WORKDIR_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "kiln verify" else None


def prepare_workdir(workdir: str | Path | None, model: str, *, protect: dict[str, Path]) -> Path:
    """The scratch directory: a new one (a temporary directory when none is named), an empty one, or
    one verify made earlier (its marker file); anything else is refused, since the rebuild writes the
    workflow's files into it. It may not be, hold or lie inside the folder verified, nor be or hold
    the checkout (``protect``: what each path is)."""
    if workdir is None:
        scratch = Path(tempfile.mkdtemp(prefix=f"kiln-verify-{model}-"))
        write_json(scratch / WORKDIR_MARKER, {"made_by": "kiln verify", "model": model})
        return scratch
    scratch = Path(os.path.abspath(workdir))
    for what, named in protect.items():
        # as named and with links resolved: a folder reached through a link into the workdir is inside it
        for work, path in ((scratch, Path(os.path.abspath(named))),
                           (Path(os.path.realpath(workdir)), Path(os.path.realpath(named)))):
            if work == path or work in path.parents or (what == "the folder verified" and path in work.parents):
                relation = "is" if work == path else ("holds" if work in path.parents else "lies inside")
                raise VerifyError(f"--workdir {workdir}: refusing to rebuild there: it {relation} {what} ({path})")
    if os.path.lexists(scratch):
        if scratch.is_symlink() or not scratch.is_dir():
            raise VerifyError(f"--workdir {workdir}: refusing to rebuild there: it exists and is not a directory "
                              f"(a symbolic link or a file)")
        if any(scratch.iterdir()) and _marker(scratch) is None:
            raise VerifyError(f"--workdir {workdir}: refusing to rebuild there: it is not empty and kiln verify did "
                              f"not make it (no {WORKDIR_MARKER}); the rebuild would overwrite its files: name a new "
                              f"or empty directory")
    scratch.mkdir(parents=True, exist_ok=True)
    if _marker(scratch) is None:
        write_json(scratch / WORKDIR_MARKER, {"made_by": "kiln verify", "model": model})
    return scratch


# -- the rebuild -----------------------------------------------------------------------------------

def _available(commit: str, checkout: Path) -> bool:
    return bool(commit) and subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=checkout,
                                           capture_output=True).returncode == 0


def _workflow_source(recorded: Recorded, checkout: Path) -> tuple[str | None, str]:
    """(commit, description) of the workflow files a rebuild uses: the commit kiln recorded while
    building first, then the commit of the checkout that staged the folder; when this repository has
    neither, this checkout's files (commit None), named."""
    recorded_commits = [c or "" for c in (recorded.kiln_commit, recorded.checkout_commit)]
    candidates = [c.removesuffix("-dirty") for c in recorded_commits]
    chosen = next((i for i, c in enumerate(candidates) if re.fullmatch(r"[0-9a-f]{7,64}", c)
                   and _available(c, checkout)), None)
    if chosen is not None:
        origin = f"the recorded commit {candidates[chosen]}"
        if recorded_commits[chosen].endswith("-dirty"):
            origin += " (the build had uncommitted changes, which no commit holds)"
        return candidates[chosen], origin
    here = checkout_state(checkout)["commit"]
    return None, (f"this checkout at {here} (neither recorded commit, {', '.join(c or '?' for c in candidates)}, "
                  f"is in this repository)")


def _populate(scratch: Path, commit: str | None, checkout: Path) -> None:
    """The workflow files of ``commit`` (else of this checkout) into ``scratch``."""
    if commit is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=checkout, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
        return
    files = subprocess.run(["git", "ls-files", "-z"], cwd=checkout, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for rel in files:
        if rel and (checkout / rel).is_file() and not (checkout / rel).is_symlink():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / rel, scratch / rel)


def _snakemake() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else (shutil.which("snakemake") or "snakemake")


def rebuild_command(model: str, cores: int) -> list[str]:
    """The Snakemake command line of a rebuild: the model's staging as the one target. The staging
    always runs again (``--forcerun=``): it copies files (the config, the lock) that no job's output
    depends on, so an edit of them alone would leave an earlier staging in place. ``--forcerun`` takes
    any number of values, so it is given with ``=``: a target after ``--forcerun X`` would be read as
    another rule to rerun, leaving no target (Snakemake then builds ``all``: every enabled model)."""
    return [_snakemake(), f"stage_{model}", "--cores", str(cores), f"--forcerun=stage_{model}"]


def rebuild(recorded: Recorded, scratch: Path, checkout: Path, cores: int, log,
            timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Build and stage the recorded model in ``scratch`` (``snakemake stage_<model>``); returns where
    the workflow files came from. Stopped (its whole process group) after ``timeout`` seconds."""
    commit, origin = _workflow_source(recorded, checkout)
    marker = _marker(scratch) or {}
    if marker.get("workflow_from") != origin:
        _populate(scratch, commit, checkout)
        write_json(scratch / WORKDIR_MARKER, {"made_by": "kiln verify", "model": recorded.model,
                                              "workflow_from": origin})
    config = scratch / "config.yaml"
    if config.is_symlink() or not config.is_file() or config.read_text() != recorded.config_text:
        config.unlink(missing_ok=True)
        config.write_text(recorded.config_text)
    log(f"rebuilding {recorded.model} in {scratch} from {origin}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(scratch / "src"), os.environ.get("PYTHONPATH", "")])}
    log_path = scratch / "verify-snakemake.log"
    with open(log_path, "w") as out:
        process = subprocess.Popen(rebuild_command(recorded.model, cores), cwd=scratch, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_ended_with_parent)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(process, scratch, env)
            raise VerifyError(f"the rebuild of {recorded.model} in {scratch} took longer than {timeout:g} s "
                              f"(--timeout) and was stopped (log: {log_path})") from None
        except BaseException:
            _stop(process, scratch, env)
            raise
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise VerifyError(f"the rebuild of {recorded.model} in {scratch} failed (log: {log_path}):\n{tail}")
    return origin


def _ended_with_parent() -> None:
    """In the rebuild's Snakemake, before it starts: SIGTERM when verify ends, however it ends (Linux's
    parent-death signal). Killed outright (kill -9, an OOM killer), verify cannot stop its rebuild
    itself, which then ran on in its own session with no time limit, holding the workdir's lock; on
    SIGTERM Snakemake stops its jobs and releases the lock."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen, scratch: Path, env: dict) -> None:
    """Stop the rebuild's process group (Snakemake and its jobs): SIGTERM, then SIGKILL; then release
    the lock the stopped Snakemake left in ``scratch`` (the next verify there failed with Snakemake's
    LockException). Only a rebuild this process stopped is unlocked: a running one keeps its lock."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is not None:
        subprocess.run([_snakemake(), "--unlock"], cwd=scratch, env=env, capture_output=True, timeout=300)


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
        return "missing from the folder"
    left, right = _files(recorded), _files(rebuilt)
    for rel in sorted(set(left) | set(right)):
        if rel not in right:
            return f"{rel or recorded.name}: only in the recorded artifact"
        if rel not in left:
            return f"{rel or recorded.name}: only in the rebuild"
        difference = _first_byte_difference(left[rel], right[rel])
        if difference:
            return f"{rel or recorded.name}: {difference}"
    return None


def _first_byte_difference(a: Path, b: Path, chunk: int = 1 << 20) -> str | None:
    """Where two files first differ, read a chunk at a time (weights may be GBs)."""
    size_a, size_b = a.stat().st_size, b.stat().st_size
    offset = 0
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            x, y = left.read(chunk), right.read(chunk)
            if x != y:
                at = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
                if at is not None:
                    return f"byte {offset + at}: recorded 0x{x[at]:02x}, rebuilt 0x{y[at]:02x} ({size_a} bytes)"
                return f"{size_a} bytes recorded, {size_b} rebuilt (equal up to there)"
            if not x:
                return None
            offset += len(x)


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
            here = f"{where}.{key}" if where else str(key)
            if key in UNCOMPARED_KEYS:
                if key in TIMING_KEYS and recorded.get(key) != rebuilt.get(key):
                    yield "not_reproducible", f"{here}: a measured timing (it differs between runs; not compared)"
                continue
            if key in recorded and key in rebuilt and recorded[key] == rebuilt[key] and \
                    type(recorded[key]) is type(rebuilt[key]):
                continue
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


def _compiled_by_apple(folder: Path, artifact: dict) -> bool:
    """Whether the folder's bundle came from Apple's coremlcompiler (absent on this machine), as its
    compile record says (a record claiming it is itself compared with the rebuild's)."""
    if artifact.get("kind") != "bundle":
        return False
    rel = f"compile/{artifact['component']}.json" if artifact.get("strategy") is None else \
        f"quantized/{artifact['strategy']}/{artifact['component']}.json"
    path = folder / KILN_DIR / "records" / rel
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(record, dict):
        return False
    bundle = record.get("bundle") if isinstance(record.get("bundle"), dict) else {}
    compiler = record.get("compiler") or bundle.get("compiler")
    from kiln.compile.apple import find_coremlcompiler

    return compiler == "apple" and find_coremlcompiler() is None


def _listing(folder: Path) -> dict[str, Path]:
    """Every regular file below ``folder`` by its relative path (links were refused before)."""
    out = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            full = Path(dirpath) / name
            out[full.relative_to(folder).as_posix()] = full
    return out


def _under(rel: str, top: str) -> bool:
    return rel == top or rel.startswith(top + "/")


def _json_or_problem(path: Path) -> tuple[Any, str | None]:
    from kiln.foundation import jsonio

    try:
        return jsonio.read(path), None
    except jsonio.JsonFileError as exc:
        return None, f"not a readable JSON record ({exc.reason})"


def _record_item(rel: str, published: Path, rebuilt: Path) -> list[Item]:
    """A job record or report, value for value (timings, paths and toolchain records excluded)."""
    mine, problem = _json_or_problem(published)
    if problem:
        return [Item(rel, "record", "differing", problem)]
    theirs, problem = _json_or_problem(rebuilt)
    if problem:
        return [Item(rel, "record", "differing", f"the rebuild's copy is {problem}")]
    found = list(value_differences(mine, theirs))
    pattern, reason = UNREPRODUCIBLE_VALUES.get(rel, (None, ""))
    if pattern is not None:
        found = [("not_reproducible" if pattern.match(text.split(":", 1)[0]) else kind,
                  f"{text.split(':', 1)[0]}: {reason}" if pattern.match(text.split(":", 1)[0]) else text)
                 for kind, text in found]
    differing = [text for kind, text in found if kind == "differing"]
    elsewhere = [text for kind, text in found if kind == "not_reproducible"]
    items = [Item(rel, "record", "differing", f"{differing[0]} ({len(differing)} value(s) differ)") if differing
             else Item(rel, "record", "reproduced")]
    if elsewhere:
        items.append(Item(rel, "record", "not_reproducible", f"{elsewhere[0]} ({len(elsewhere)} value(s))"))
    return items


def _exact_differences(recorded: Any, rebuilt: Any, where: str) -> Iterator[str]:
    if isinstance(recorded, dict) and isinstance(rebuilt, dict):
        for key in sorted(set(recorded) | set(rebuilt), key=str):
            yield from _exact_differences(recorded.get(key), rebuilt.get(key), f"{where}.{key}")
    elif isinstance(recorded, list) and isinstance(rebuilt, list) and len(recorded) == len(rebuilt):
        for index, (a, b) in enumerate(zip(recorded, rebuilt)):
            yield from _exact_differences(a, b, f"{where}[{index}]")
    elif recorded != rebuilt or type(recorded) is not type(rebuilt):
        yield f"{where}: recorded {_short(recorded)}, rebuilt {_short(rebuilt)}"


def _provenance_item(published: Path, rebuilt: dict, unreproducible: set[str]) -> Item:
    """provenance.json against the rebuild's: everything but where and by whom it was staged (the
    artifacts' names, digests and sizes, the sources, the published names), and its lock digests
    against the folder's locks."""
    rel = f"{KILN_DIR}/provenance.json"
    mine, problem = _json_or_problem(published / rel)
    if problem or not isinstance(mine, dict):
        return Item(rel, "record", "differing", problem or "not a JSON object")

    def comparable(provenance: dict) -> dict:
        out = {k: v for k, v in provenance.items() if k not in PROVENANCE_ENVIRONMENT}
        source = out.get("source")
        if isinstance(source, dict) and isinstance(source.get("files"), list):
            # where the checkpoint lay on the staging machine and when it was written there: not
            # what it is (its sha256 and size are compared)
            out["source"] = {**source, "files": [{k: v for k, v in f.items() if k not in ("path", "mtime_ns")}
                                                 if isinstance(f, dict) else f for f in source["files"]]}
        if isinstance(out.get("artifacts"), list):   # Apple-compiled bundles: their digests cannot match here
            out["artifacts"] = [{k: v for k, v in a.items() if k not in ("sha256", "size_bytes")}
                                if isinstance(a, dict) and a.get("path") in unreproducible else a
                                for a in out["artifacts"]]
        return out

    found = list(_exact_differences(comparable(mine), comparable(rebuilt), "provenance"))
    # the staging environment is not rebuilt, but it must be the one the folder's records name (the
    # toolchain the card shows is the one compared with this machine's before the rebuild)
    for rel_metadata in ("metadata.json", f"{KILN_DIR}/records/metadata.json"):
        metadata, _ = _json_or_problem(published / rel_metadata)
        toolchain = metadata.get("toolchain") if isinstance(metadata, dict) else None
        if mine.get("toolchain") != toolchain:
            found.append(f"provenance.toolchain: differs from {rel_metadata}'s toolchain")
        elif isinstance(toolchain, dict) and isinstance(toolchain.get("kiln"), dict) \
                and isinstance(mine.get("kiln"), dict):
            for key, value in (("version", toolchain["kiln"].get("version")),
                               ("git_commit", toolchain["kiln"].get("git_commit"))):
                if mine["kiln"].get(key) != value:
                    found.append(f"provenance.kiln.{key}: recorded {_short(mine['kiln'].get(key))}, "
                                 f"{rel_metadata} has {_short(value)}")
    locks = mine.get("locks") if isinstance(mine.get("locks"), dict) else {}
    for name in ("toolchain.lock", "dvc.lock"):
        path = published / KILN_DIR / name
        actual = sha256_file(path) if path.is_file() else None
        if locks.get(name) != actual:
            found.append(f"provenance.locks.{name}: recorded {_short(locks.get(name))}, the folder's "
                         f"{KILN_DIR}/{name} has {_short(actual)}")
    if found:
        return Item(rel, "record", "differing", f"{found[0]} ({len(found)} value(s) differ)")
    return Item(rel, "record", "reproduced")


def _card_item(published: Path, rebuilt: Path, rebuilt_provenance: dict) -> Item:
    """README.md regenerated as staging writes it: from the folder's reports (each compared with the
    rebuild's on its own), the rebuild's artifacts, side files and plots, and where and by whom the
    folder was staged (its provenance's)."""
    from kiln.distribution.publish import model_card

    try:
        mine = json.loads((published / KILN_DIR / "provenance.json").read_text())
        provenance = {**rebuilt_provenance, **{k: mine[k] for k in PROVENANCE_ENVIRONMENT if k in mine}}
        reports = [json.loads((published / name).read_text())
                   for name in ("metadata.json", "quantization_summary.json")]
        # staging passes the contract report exactly when the family has a contract (its consumer)
        contract = json.loads((published / "contract.json").read_text()) if rebuilt_provenance.get("consumer") \
            else None
        expected = model_card(provenance, *reports, contract, rebuilt)
    except (OSError, ValueError, RecursionError, KeyError, TypeError, AttributeError, IndexError) as exc:
        return Item("README.md", "card", "differing", f"cannot be regenerated from the folder's records "
                                                       f"({type(exc).__name__}: {exc})")
    raw = (published / "README.md").read_bytes()
    if raw == expected.encode("utf-8"):
        return Item("README.md", "card", "reproduced")
    actual = raw.decode("utf-8", errors="replace")
    if actual.replace("\r\n", "\n") == expected:
        return Item("README.md", "card", "differing", "differs from the card regenerated from the records "
                                                       "(its line ends are CRLF)")
    left, right = actual.splitlines(), expected.splitlines()
    line = next((i for i, (a, b) in enumerate(zip(left, right)) if a != b), min(len(left), len(right)))
    shown = (f"line {line + 1}: {_short(left[line]) if line < len(left) else 'absent'}, regenerated "
             f"{_short(right[line]) if line < len(right) else 'absent'}")
    return Item("README.md", "card", "differing", f"differs from the card regenerated from the records ({shown})")


#: what huggingface_hub keeps under .cache/huggingface/ of a download folder: its .gitignore, and per
#: file a small metadata record (commit, etag, time) and a lock, by the file's path
HUB_BOOKKEEPING = re.compile(r"^\.cache/huggingface/(\.gitignore(\.lock)?|(download|upload)/.+\.(metadata|lock))$")
#: the most a file of that bookkeeping holds (a metadata record is three short lines)
HUB_BOOKKEEPING_BYTES = 4096


def _bookkeeping(rel: str, path: Path) -> str | None:
    """Why ``rel`` is bookkeeping rather than a file kiln staged, or None. Only the shapes the tools
    write pass: Snakemake's empty marker, huggingface_hub's small records by name and size (any other
    file under .cache/, such as a bundle, is compared like the rest: not produced by the rebuild)."""
    top = rel.split("/", 1)[0]
    if rel.rsplit("/", 1)[-1] == SNAKEMAKE_MARKER:
        return "Snakemake's marker of a directory output, never uploaded" if path.stat().st_size == 0 else None
    if top == ".cache":
        if not HUB_BOOKKEEPING.match(rel) or path.stat().st_size > HUB_BOOKKEEPING_BYTES:
            return None
    return BOOKKEEPING.get(top)


def compare_folders(published: Path, rebuilt: Path) -> list[Item]:
    """Account for every file of the published folder against the folder the rebuild staged: the
    rebuild's files say what must be there; a file missing from either side is named."""
    provenance_path = rebuilt / KILN_DIR / "provenance.json"
    provenance, problem = _json_or_problem(provenance_path)
    if problem:
        raise VerifyError(f"{provenance_path}: the rebuild staged no readable provenance ({problem})")
    items: list[Item] = []
    mine, theirs = _listing(published), _listing(rebuilt)
    theirs = {rel: path for rel, path in theirs.items() if rel.rsplit("/", 1)[-1] != SNAKEMAKE_MARKER}
    grouped: dict[str, str] = {}
    for rel in sorted(mine):
        reason = _bookkeeping(rel, mine[rel])
        if reason:
            top = rel.split("/", 1)[0] if rel.split("/", 1)[0] in (".git", ".cache") else rel
            grouped.setdefault(top, reason)
            del mine[rel]
    items += [Item(name, "file", "not_reproducible", reason) for name, reason in grouped.items()]
    unreproducible = set()
    for artifact in provenance["artifacts"]:
        path = artifact["path"]
        if _compiled_by_apple(published, artifact):
            unreproducible.add(path)
            items.append(Item(path, artifact["kind"], "not_reproducible",
                              "compiled by Apple's coremlcompiler, which this machine lacks"))
        else:
            difference = first_tree_difference(published / path, rebuilt / path)
            items.append(Item(path, artifact["kind"], "differing" if difference else "reproduced", difference or ""))
        for listing in (mine, theirs):
            for rel in [r for r in listing if _under(r, path)]:
                del listing[rel]
    side_files = set(provenance.get("side_files") or [])
    for rel in sorted(set(mine) | set(theirs)):
        if rel == f"{KILN_DIR}/dvc.lock" and (rel not in mine or rel not in theirs):
            items.append(Item(rel, "file", "not_reproducible", "the DVC lock of the checkout that staged it (present "
                              f"{'in the folder' if rel in mine else 'in the rebuild'} only; provenance.json's lock "
                              f"digest is checked against the folder)"))
        elif rel not in mine:
            items.append(Item(rel, "file", "differing", "missing from the folder (the rebuild stages it)"))
        elif rel not in theirs:
            items.append(Item(rel, "file", "differing", "not produced by the rebuild (the build makes no such file)"))
        elif rel == "README.md":
            items.append(_card_item(published, rebuilt, provenance))
        elif rel == f"{KILN_DIR}/provenance.json":
            items.append(_provenance_item(published, provenance, unreproducible))
        elif rel.endswith(".json") and rel not in side_files:
            items += _record_item(rel, mine[rel], theirs[rel])
        else:
            difference = _first_byte_difference(mine[rel], theirs[rel])
            kind = "plot" if rel.startswith("plots/") else "file"
            if difference is None:
                items.append(Item(rel, kind, "reproduced"))
            elif TIMING_PLOT.match(rel):
                items.append(Item(rel, kind, "not_reproducible", "a plot of measured latencies, which differ "
                                                                  "between runs (their figures are not compared)"))
            elif rel == f"{KILN_DIR}/dvc.lock":
                items.append(Item(rel, "file", "not_reproducible", "the DVC lock of the checkout that staged it "
                                                                   "(digests of its results, timings included)"))
            else:
                items.append(Item(rel, kind, "differing", difference))
    return items


# -- the command -----------------------------------------------------------------------------------

def verify(target: str | Path, *, workdir: str | Path | None = None, cores: int = 2, checkout: str | Path = ".",
           report: str | Path | None = None, timeout: float | None = None, log=print) -> dict:
    checkout = Path(checkout).resolve()
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    if not timeout > 0 or timeout == float("inf"):
        raise VerifyError(f"--timeout {timeout}: the rebuild's time limit must be a positive number of seconds")
    recorded = read_recorded(target, checkout)
    scratch = prepare_workdir(workdir, recorded.model,
                              protect={"the checkout": checkout, "the folder verified": Path(target)})
    differences = toolchain_differences(recorded, checkout)
    if differences:
        log("toolchain differs from the recorded one (the rebuild may differ because of it):")
        for line in differences:
            log(f"  {line}")
    else:
        log("toolchain: as recorded")
    if recorded.results is not None:   # this checkout's results, staged as `kiln publish` would
        from kiln.config import load_config
        from kiln.distribution.publish import stage

        recorded.folder = scratch / RECORDED_STAGING / recorded.model
        stage(load_config(checkout / "config.yaml"), recorded.model, recorded.folder, checkout=checkout)
    origin = rebuild(recorded, scratch, checkout, cores, log, timeout=timeout)
    items = compare_folders(recorded.folder, scratch / "publish" / recorded.model)
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


def verify_job(config, *, model: str, workdir: str | Path, report: str | Path, threads: int = 2) -> dict:
    """The workflow's verify_<model>: results/<model> rebuilt in ``workdir`` with ``threads`` cores;
    writes ``report``, fails when anything differs."""
    import logging

    from kiln import layout

    out_report, cores = report, threads
    logger = logging.getLogger("kiln.distribution.verify")
    result = verify(layout.MODEL_DIR.path(config, model=model), workdir=workdir, cores=cores, report=out_report,
                    log=logger.info)
    if not result["reproduced"]:
        raise VerifyError(f"{model}: {result['counts']['differing']} item(s) differ from the rebuild "
                          f"(report: {out_report})")
    return result
