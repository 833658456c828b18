"""Publishing a built model as a Hugging Face model repo: ``kiln publish <model>`` and the workflow's
``stage_<model>`` / ``publish_<model>`` rules.

:func:`stage` writes the repo folder (``publish/<model>/``, atomically):

| path | what |
|---|---|
| ``<name>.mlmodelc``, ``<name>.mlpackage`` | compiled bundles and packages, named as the consumer loads them (``contracts/<family>.yaml``; components it does not load keep their own names) |
| ``quantized/<strategy>/<name>.mlmodelc``, ``.mlpackage`` | the quantized variants |
| side files (``parakeet_vocab.json``, ``vocab.json``) | the contract's ``files``, written from the build's facts |
| ``metadata.json``, ``quantization_summary.json``, ``contract.json``, ``plots/`` | the build's reports |
| ``README.md`` | the model card: what, files, usage, parity and quantization tables, plots, provenance |
| ``kiln/records/`` | every job record of the build (sources, settings digests, parity and quantization figures) |
| ``kiln/config.yaml``, ``kiln/toolchain.lock``, ``kiln/dvc.lock`` | the settings, the locked environment (constraints.txt) and the DVC lock of the checkout that built it |
| ``kiln/provenance.json`` | kiln version and git commits, toolchain, component -> published name, sha256 of every artifact |

:func:`publish` stages, then uploads with ``huggingface_hub`` (token: ``HF_TOKEN``); it refuses without
a token or from a working tree with uncommitted changes (the published commit must name what built it).
``kiln verify`` rebuilds such a folder and compares it (:mod:`kiln.distribution.verify`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

from kiln.foundation.errors import KilnError
from kiln.foundation.fsutil import atomic_dir, irregular_entries, sha256_file, sha256_tree, tree_size, write_json
from kiln.distribution.report import format_value

PROVENANCE_SCHEMA_VERSION = 1
#: the folder (inside a published repo) holding what reproduces it
KILN_DIR = "kiln"
#: files of KILN_DIR that `kiln verify` needs
REQUIRED_LOCK_FILES = ("provenance.json", "config.yaml", "toolchain.lock", "records/source.json")
TOOLCHAIN_LOCK = "constraints.txt"
DEFAULT_OUT = Path("publish")


class PublishError(KilnError):
    """A model cannot be staged or published. Names the file, target or what is missing."""


# -- the checkout ----------------------------------------------------------------------------------

def _git(*args: str, cwd: Path) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def checkout_state(root: Path) -> dict:
    """HEAD commit of the checkout at ``root`` and its uncommitted changes (tracked and untracked,
    git-ignored files such as results/ excluded)."""
    commit = _git("rev-parse", "HEAD", cwd=root)
    status = _git("status", "--porcelain", cwd=root)
    # porcelain lines are "XY path"; X may be a space, which _git's strip() removed from the first line
    changes = [line.split(None, 1)[1] for line in (status or "").splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changes), "changes": changes}


# -- staging ---------------------------------------------------------------------------------------

def _read(path: Path, what: str) -> dict:
    from kiln.foundation import jsonio

    if not path.exists():
        raise PublishError(f"{path}: missing {what}; build it first (snakemake all_{path.parts[-2]})")
    try:
        return jsonio.read(path)
    except jsonio.JsonFileError as exc:
        raise PublishError(f"{path}: unreadable {what} ({exc.reason})") from None


def _is_staged_folder(path: Path) -> bool:
    return (path / KILN_DIR / "provenance.json").is_file()


def records_of(model_dir: Path) -> list[Path]:
    """Every job record (JSON) of a model's results, bundles' own files excluded."""
    out = []
    for record in sorted(model_dir.rglob("*.json")):
        rel = record.relative_to(model_dir).as_posix()
        if ".mlpackage/" in rel or ".mlmodelc/" in rel:
            continue
        out.append(record)
    return out


def component_of(relpath: str) -> str | None:
    """The ``{component}`` wildcard of the :mod:`kiln.layout` artifact ``relpath`` (relative to a
    model's results folder) is an instance of, or None (a model-level file, or none of the layout's):
    read from the layout's templates, never from a component's name."""
    from kiln import layout

    for artifact in layout.ARTIFACTS.values():
        if "component" in artifact.wildcards and artifact.template.startswith("{model}/"):
            parts = re.split(r"(\{\w+\})", artifact.template.removeprefix("{model}/"))
            pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
            match = re.fullmatch(pattern, relpath)
            if match:
                return match.group("component")
    return None


def _strings(node: Any) -> Iterator[str]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def declared_outputs(model_dir: Path, model_cfg) -> set[str]:
    """What the jobs of the model's configured components and strategies write below its results
    folder (paths relative to it): every file of :mod:`kiln.layout` with its wildcards filled in, and
    the family's own plots and sounds its job records name (``<model>/plots/...``). Staging copies
    nothing else: a file no job wrote (a stray file, a hard link to a host file) is never shipped."""
    from kiln import layout
    from kiln.foundation import jsonio

    components = list(model_cfg.components)
    strategies = {c: list(model_cfg.components[c].quantize["strategies"]) for c in components}
    fills = {(): [{}], ("component",): [{"component": c} for c in components],
             ("strategy",): [{"strategy": s} for s in sorted({s for c in components for s in strategies[c]})],
             ("component", "strategy"): [{"component": c, "strategy": s} for c in components for s in strategies[c]]}
    out = set()
    for artifact in layout.ARTIFACTS.values():
        if artifact.template.startswith("{model}/"):
            for wildcards in fills[tuple(sorted(set(artifact.wildcards) - {"model"}))]:
                out.add(artifact.in_model_dir(Path(), **wildcards).as_posix())
    marker = f"{model_dir.name}/{layout.PLOTS_DIR.in_model_dir(Path()).as_posix()}/"
    for record in records_of(model_dir):
        if record.relative_to(model_dir).as_posix() not in out:
            continue
        try:
            data = jsonio.read(record)
        except jsonio.JsonFileError:
            continue   # an unreadable record names nothing (staging reads the ones it needs, bounded)
        for text in _strings(data):
            at = text.find(marker)
            if at == 0 or (at > 0 and text[at - 1] == "/"):
                out.add(text[at + len(model_dir.name) + 1:])
    return out


def plots_of(model_dir: Path, model_cfg) -> list[Path]:
    """The model's plots that its jobs wrote (:func:`declared_outputs`), without those of components
    this model no longer configures (a results folder keeps the plots of an earlier configuration: the
    components it holds export records of, whatever their names, e.g. a ``streaming_encoder_160ms``
    entry since removed)."""
    from kiln import layout
    from kiln.foundation import jsonio

    declared = declared_outputs(model_dir, model_cfg)
    folder = layout.PLOTS_DIR.in_model_dir(model_dir)
    plots = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    # a plot's component: the layout wildcard its own path fills, else that of a component's record
    # naming it (any record the folder holds: one of a component since removed names that component)
    owners: dict[str, str] = {}
    marker = f"{model_dir.name}/{layout.PLOTS_DIR.in_model_dir(Path()).as_posix()}/"
    for record in records_of(model_dir):
        rel = record.relative_to(model_dir).as_posix()
        if component_of(rel) is None:
            continue
        try:
            texts = list(_strings(jsonio.read(record)))
        except jsonio.JsonFileError:
            continue
        for text in texts:
            at = text.find(marker)
            if at == 0 or (at > 0 and text[at - 1] == "/"):
                owners.setdefault(text[at + len(model_dir.name) + 1:], component_of(rel))
    kept = []
    for plot in plots:
        rel = plot.relative_to(model_dir).as_posix()
        owner = component_of(rel) or owners.get(rel)
        if owner in (None, *model_cfg.components) and rel in declared:
            kept.append(plot)
    return kept


def configured_records(model_dir: Path, model_cfg) -> list[Path]:
    """The model's job records (:func:`declared_outputs`), without those of components or strategies
    it no longer configures."""
    out = []
    declared = declared_outputs(model_dir, model_cfg)
    for record in records_of(model_dir):
        if record.relative_to(model_dir).as_posix() not in declared:
            continue
        parts = record.relative_to(model_dir).parts
        if parts[0] in ("export", "compile", "parity", "ios18") and record.stem not in model_cfg.components:
            continue
        if parts[0] == "quantized" and (record.stem not in model_cfg.components or
                                        parts[1] not in model_cfg.components[record.stem].quantize["strategies"]):
            continue
        out.append(record)
    return out


def refuse_irregular(root: Path, what: str) -> None:
    """Refuse, naming them, links and special files anywhere below ``root`` (the model's results, a
    staged folder): staging and uploading carry regular files only, never what a link points at."""
    found = irregular_entries(root) if root.is_dir() else []
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise PublishError(f"{root}: refusing to {what}: {shown}; kiln ships only the regular files its jobs "
                           f"wrote (remove these)")


def _copy(src: Path, dest: Path, root: Path) -> None:
    """Copy a regular file or a tree of them to ``dest``, which must lie inside ``root``."""
    if Path(os.path.abspath(root)) not in Path(os.path.abspath(dest)).parents:
        raise PublishError(f"{dest}: outside the staging folder {root}; refusing to write it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        raise PublishError(f"{src}: a symbolic link; kiln ships only the regular files its jobs wrote")
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".snakemake_timestamp"))
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


def published_layout(config, model: str, results_dir: Path, contract: dict | None,
                     source_version: str | None) -> list[dict]:
    """Every artifact to publish: ``{kind, component, strategy, source (path in results), path (in the
    repo)}``, named from the consumer contract."""
    from kiln.distribution.contracts import published_names

    model_cfg = config.model(model)
    names = (published_names(contract, model_cfg.components, source_version) if contract
             else {c: c for c in model_cfg.components})
    from kiln import layout as results

    built = {".mlmodelc": results.BUNDLE, ".mlpackage": results.PACKAGE}
    layout = []
    for component, name in names.items():
        for suffix, kind in ((".mlmodelc", "bundle"), (".mlpackage", "package")):
            layout.append({"kind": kind, "component": component, "strategy": None,
                           "source": str(built[suffix].path(results_dir, model=model, component=component)),
                           "path": f"{name}{suffix}"})
        for strategy in model_cfg.components[component].quantize["strategies"]:
            for suffix, kind in ((".mlmodelc", "bundle"), (".mlpackage", "package")):
                # a variant lies beside its record, named like the float artifact
                src = results.QUANTIZED_DIR.path(results_dir, model=model, strategy=strategy) / f"{component}{suffix}"
                if src.exists():   # a skipped strategy has a record and no files
                    layout.append({"kind": kind, "component": component, "strategy": strategy,
                                   "source": str(src), "path": f"quantized/{strategy}/{name}{suffix}"})
    return layout


def stage(config, model: str, out_dir: str | Path | None = None, *, repo_id: str | None = None,
          checkout: str | Path = ".") -> dict:
    """Write the model repo folder of ``model`` (see the module doc); returns its provenance."""
    from kiln.distribution import contracts
    from kiln.integrity.artifacts import check_results
    from kiln.integrity.provenance import toolchain

    checkout = Path(checkout)
    model_cfg = config.model(model)
    from kiln import layout as results

    results_dir = Path(config.results_dir)
    model_dir = results.MODEL_DIR.path(results_dir, model=model)
    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT / model
    refuse_irregular(model_dir, "stage it")
    metadata = _read(results.METADATA.path(results_dir, model=model), "metadata.json")
    summary = _read(results.QUANTIZATION_SUMMARY.path(results_dir, model=model), "quantization_summary.json")
    contract_file = contracts.contract_path(model_cfg.family, checkout)
    contract = report = None
    if contract_file.is_file():
        contract = contracts.load_contract(contract_file)
        report = _read(results.CONTRACT_REPORT.path(results_dir, model=model), "contract report")
    artifacts, problems = check_results(model_dir)
    if problems:
        raise PublishError(f"{model_dir}: {len(problems)} artifact(s) differ from their job records "
                           f"(`kiln check {model_dir}` lists them); rebuild before publishing")
    lock = checkout / TOOLCHAIN_LOCK
    if not lock.is_file():
        raise PublishError(f"{lock}: missing toolchain lock (the pinned environment a reproduction installs)")
    source_version = metadata["source"].get("version")
    layout = published_layout(config, model, results_dir, contract, source_version)
    state = checkout_state(checkout)
    facts = json.loads(results.FACTS.path(results_dir, model=model).read_text())["facts"]
    with atomic_dir(out_dir, replaceable=_is_staged_folder, kind="a staged model repo") as tmp:
        for item in layout:
            _copy(Path(item["source"]), tmp / item["path"], tmp)
            item["sha256"] = sha256_tree(tmp / item["path"])
            item["size_bytes"] = tree_size(tmp / item["path"])
            item["source"] = Path(item["source"]).relative_to(results_dir).as_posix()
        side_files = contracts.write_side_files(contract, facts, tmp) if contract else []
        for name in ("metadata.json", "quantization_summary.json", "contract.json", "end_to_end.json"):
            if (model_dir / name).is_file():
                _copy(model_dir / name, tmp / name, tmp)
        for plot in plots_of(model_dir, model_cfg):
            _copy(plot, tmp / plot.relative_to(model_dir), tmp)
        kiln_dir = tmp / KILN_DIR
        for record in configured_records(model_dir, model_cfg):
            _copy(record, kiln_dir / "records" / record.relative_to(model_dir), tmp)
        _copy(Path(config.path), kiln_dir / "config.yaml", tmp)
        _copy(lock, kiln_dir / "toolchain.lock", tmp)
        dvc_lock = checkout / "dvc.lock"
        if dvc_lock.is_file():
            _copy(dvc_lock, kiln_dir / "dvc.lock", tmp)
        provenance = {
            "schema_version": PROVENANCE_SCHEMA_VERSION,
            "model": model,
            "family": model_cfg.family,
            "synthetic": model_cfg.synthetic,
            "repo_id": repo_id,
            "results_dir": config.results_dir,
            "consumer": contract["consumer"] if contract else None,
            "names": report["published_names"] if report else {c: c for c in model_cfg.components},
            "kiln": {"version": metadata["toolchain"]["kiln"]["version"],
                     "git_commit": metadata["toolchain"]["kiln"]["git_commit"],
                     "checkout_commit": state["commit"], "checkout_dirty": state["dirty"]},
            "toolchain": metadata["toolchain"],
            "staged_with": toolchain(),
            "source": metadata["source"],
            "locks": {"toolchain.lock": sha256_file(kiln_dir / "toolchain.lock"),
                      "dvc.lock": sha256_file(kiln_dir / "dvc.lock") if dvc_lock.is_file() else None},
            "artifacts": layout,
            "side_files": side_files,
        }
        write_json(kiln_dir / "provenance.json", provenance)
        (tmp / "README.md").write_text(model_card(provenance, metadata, summary, report, tmp))
        refuse_irregular(tmp, "stage it")
    return provenance


# -- the model card --------------------------------------------------------------------------------

def _num(value: Any, digits: int = 4) -> str:
    return format_value(value, digits, false="**no**")  # a failed check stands out in markdown


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def model_card(provenance: dict, metadata: dict, summary: dict, contract_report: dict | None, folder: Path) -> str:
    """The repo's README.md, generated from the build's records (nothing typed by hand)."""
    model, source = provenance["model"], metadata["source"]
    tags = ["coreml", "kiln", metadata.get("task") or "audio", provenance["family"]]
    front = ["---", "library_name: coreml", "tags:"] + [f"- {t}" for t in tags]
    if source.get("kind") == "hf":
        front.append(f"base_model: {source['id']}")
    front.append("---")
    lines = front + ["", f"# {model} (Core ML)", ""]
    if provenance["synthetic"]:
        lines += ["> **Synthetic**: random-initialised weights, built for tests and benchmarks. It computes "
                  "nothing useful.", ""]
    where = f"`{source['id']}`" + (f" at revision `{source['revision']}`" if source.get("revision") else "") + \
        (f" (version {source['version']})" if source.get("version") else "")
    lines += [f"Core ML builds of {where}, made by kiln {provenance['kiln']['version']} "
              f"(commit `{provenance['kiln']['checkout_commit']}`{' with uncommitted changes' if provenance['kiln']['checkout_dirty'] else ''}), "
              f"checked against the source model on kiln's ML Program executor"
              + (f" and against {provenance['consumer']}'s contract" if provenance['consumer'] else "") + ".", ""]
    lines += ["## Files", "", "| file | component | variant | size | sha256 |", "|---|---|---|---|---|"]
    for item in provenance["artifacts"]:
        lines.append(f"| `{item['path']}` | {item['component']} | {item['strategy'] or 'float'} | "
                     f"{_size(item['size_bytes'])} | `{item['sha256'][:16]}…` |")
    for name in provenance["side_files"]:
        lines.append(f"| `{name}` | – | from the build's facts | {_size((folder / name).stat().st_size)} | "
                     f"`{sha256_file(folder / name)[:16]}…` |")
    lines.append("")
    if contract_report:
        lines += [f"## Using it ({contract_report['consumer']})", "",
                  f"File and feature names follow {contract_report['consumer']}'s loader "
                  f"(`{contract_report['contract']}`); `contract.json` is the check of these files against it.", ""]
        for component, entry in contract_report["components"].items():
            first = next(iter(entry["artifacts"].values()))["features"]
            ins = ", ".join(f"`{n}` {f['shape']} {f['dtype']}" for n, f in first["inputs"].items())
            outs = ", ".join(f"`{n}` {f['shape']} {f['dtype']}" for n, f in first["outputs"].items())
            lines.append(f"- `{contract_report['published_names'][component]}.mlmodelc`: {ins} → {outs}")
            for name, why in entry.get("extra_inputs", {}).items():
                lines.append(f"  - `{name}`: {why}")
        ids = {n: b["built"] for n, b in contract_report["bindings"].items()}
        lines += ["", "Values the loader relies on: " + ", ".join(f"{n} = {v}" for n, v in ids.items()), ""]
    lines += ["## Parity with the source model", "",
              "Per output and backend over the validation inputs "
              "(max absolute / relative error, PSNR, quality = max(0, 1 − ‖y − ŷ‖/‖y‖), within tolerance):", "",
              "| component | output | backend | max abs | max rel | PSNR dB | quality | match |",
              "|---|---|---|---|---|---|---|---|"]
    for component, entry in metadata["components"].items():
        for row in entry.get("parity") or []:
            lines.append(f"| {component} | {row['output']} | {row['backend']} | {_num(row.get('max_abs'))} | "
                         f"{_num(row.get('max_rel'))} | {_num(row.get('psnr_db'), 3)} | {_num(row.get('quality'))} | "
                         f"{_num(row.get('match'))} |")
    metrics = [(c, b, m) for c, e in metadata["components"].items() for b, m in (e.get("task_metrics") or {}).items()]
    if metrics:
        lines += ["", "Task metrics:", ""]
        for component, backend, values in metrics:
            shown = ", ".join(f"{k} {_num(v)}" for k, v in values.items() if not isinstance(v, (list, dict)))
            lines.append(f"- {component} on {backend}: {shown}")
    absent = sorted({f"{b}: {why}" for e in metadata["components"].values()
                     for b, why in (e.get("absent_backends") or {}).items()})
    if absent:
        lines += ["", "Not measured on the build machine: " + "; ".join(absent) + "."]
    lines += ["", "## Quantization", "", "Ranked per component by the family's task metric where it has one, else by "
              "quality; *kiln = torch* is kiln's execution of the variant against torch running its dequantized weights.", "",
              "| strategy | component | rank | task metric | size | ratio | quality | PSNR dB (worst) | kiln = torch | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary.get("results") or []:
        if row["status"] != "ok":
            lines.append(f"| {row['strategy']} | {row['component']} | – | – | – | – | – | – | – | "
                         f"skipped: {row.get('skip_reason')} |")
            continue
        psnrs = [o.get("psnr_db") for o in row["outputs"].values() if o.get("psnr_db") is not None]
        task = row.get("task_score")
        lines.append(f"| {row['strategy']} | {row['component']} | {row.get('rank', '–')} | "
                     f"{(task['metric'] + ' ' + _num(task['value'])) if task else '–'} | {_size(row['package']['size_bytes'])} | "
                     f"{_num(row['size_ratio'], 3)} | {_num(row['quality'])} | {_num(min(psnrs) if psnrs else None, 3)} | "
                     f"{(row.get('dequantized_torch') or {}).get('verdict', '–')} | "
                     f"ok{' (Pareto)' if row.get('pareto_optimal') else ''} |")
    plots = sorted(p.relative_to(folder).as_posix() for p in (folder / "plots").rglob("*.png")) \
        if (folder / "plots").is_dir() else []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    toolchain = provenance["toolchain"]
    lines += ["", "## Provenance and reproduction", "",
              f"- source: {source['kind']} `{source['id']}`" + (f" @ `{source['revision']}`" if source.get("revision") else ""),
              ]
    for f in source.get("files") or []:
        lines.append(f"  - {f['role']}: sha256 `{f['sha256']}` ({f['size']} bytes)")
    lines += [f"- toolchain: " + ", ".join(f"{k} {v}" for k, v in toolchain.items() if isinstance(v, str)),
              f"- kiln {provenance['kiln']['version']}, git commit `{provenance['kiln']['git_commit']}`",
              f"- `kiln/`: every job record, the settings (`config.yaml`), the locked environment "
              f"(`toolchain.lock`){', the DVC lock' if provenance['locks']['dvc.lock'] else ''} and `provenance.json`.",
              "", "Rebuild and compare byte for byte: `kiln verify <this folder>` in a kiln checkout.", ""]
    return "\n".join(lines)


# -- publishing ------------------------------------------------------------------------------------

def refusal(*, token: str | None, state: dict) -> str | None:
    """Why a real (non-dry-run) publish must not go ahead, or None."""
    if not token:
        return ("refusing to publish: no Hugging Face token in the environment (set HF_TOKEN); "
                "--dry-run stages the folder without one")
    if state["commit"] is None:
        return "refusing to publish: the checkout is not a git repository (the card must name the commit that built it)"
    if state["dirty"]:
        shown = ", ".join(state["changes"][:5]) + (" …" if len(state["changes"]) > 5 else "")
        return (f"refusing to publish from a working tree with uncommitted changes ({shown}): commit them so the "
                f"published commit names what built it; --dry-run stages anyway")
    return None


def configured_repo(config, model: str) -> dict:
    """The model's ``publish`` block of config.yaml (``repo_id``, ``private``), or {}."""
    return dict((config.raw.get("models", {}).get(model) or {}).get("publish") or {})


def upload_staged(folder: str | Path, repo_id: str | None, *, private: bool = False,
                  checkout: str | Path = ".") -> dict:
    """Upload a staged folder (refused without a token, from a dirty tree, or when the folder was
    staged at another commit than the checkout's)."""
    from kiln.sources import hub

    folder = Path(folder)
    if not repo_id:
        raise PublishError(f"no repo to publish {folder} to: pass --repo-id ORG/NAME or set "
                           f"models.<model>.publish.repo_id in config.yaml")
    state = checkout_state(Path(checkout))
    reason = refusal(token=hub.token_from_environment(), state=state)
    if reason:
        raise PublishError(reason)
    refuse_irregular(folder, "upload it")
    try:
        provenance = json.loads((folder / KILN_DIR / "provenance.json").read_text())
    except (OSError, ValueError) as exc:
        raise PublishError(f"{folder}: not a staged model repo ({KILN_DIR}/provenance.json: {exc})") from None
    if provenance["kiln"]["checkout_commit"] != state["commit"] or provenance["kiln"]["checkout_dirty"]:
        raise PublishError(f"{folder} was staged at {provenance['kiln']['checkout_commit']}"
                           f"{' with uncommitted changes' if provenance['kiln']['checkout_dirty'] else ''}, the "
                           f"checkout is at {state['commit']}: stage it again")
    message = f"kiln {provenance['kiln']['version']}: {provenance['model']} built at {state['commit']}"
    return hub.upload(folder, repo_id, token=hub.token_from_environment(), message=message, private=private)


def publish(config, model: str, *, repo_id: str | None, dry_run: bool, out_dir: str | Path | None = None,
            private: bool = False, checkout: str | Path = ".") -> dict:
    """Stage ``model`` and, unless ``dry_run``, upload the folder to ``repo_id`` on the Hub (refusals
    are checked before anything is staged)."""
    from kiln.sources import hub

    configured = configured_repo(config, model)
    repo_id = repo_id or configured.get("repo_id")
    private = private or bool(configured.get("private"))
    if not dry_run:
        if not repo_id:
            raise PublishError(f"no repo to publish {model} to: pass --repo-id ORG/NAME or set "
                               f"models.{model}.publish.repo_id in config.yaml")
        reason = refusal(token=hub.token_from_environment(), state=checkout_state(Path(checkout)))
        if reason:
            raise PublishError(reason)
    out = Path(out_dir) if out_dir else DEFAULT_OUT / model
    provenance = stage(config, model, out, repo_id=repo_id, checkout=checkout)
    result = {"model": model, "folder": str(out), "repo_id": repo_id, "dry_run": dry_run,
              "artifacts": len(provenance["artifacts"]), "uploaded": None}
    if not dry_run:
        result["uploaded"] = upload_staged(out, repo_id, private=private, checkout=checkout)
    return result


# -- workflow jobs ---------------------------------------------------------------------------------

def stage_job(config, *, model: str, folder: str | Path) -> dict:
    """The workflow's stage_<model>: the model repo ``folder``."""
    provenance = stage(config, model, folder, repo_id=configured_repo(config, model).get("repo_id"))
    return {"folder": str(folder), "artifacts": len(provenance["artifacts"])}


def upload_job(config, *, model: str, folder: str | Path, record: str | Path) -> dict:
    """The workflow's publish_<model>: uploads the staged ``folder``, writes the upload's ``record``."""
    configured = configured_repo(config, model)
    result = upload_staged(folder, configured.get("repo_id"), private=bool(configured.get("private")))
    write_json(record, {"model": model, **result})
    return result
