"""The workflow's jobs as plain functions: Snakemake scripts call these, tests call them directly.

Load once, reference once: per model, the **prepare** job is the only one that loads the source
checkpoint (it traces every component and writes ``prepared/<component>.pt`` + ``facts.json``), and
the **reference** job runs those traced programs on the validation inputs once (``reference/*.npz``).
Export, compile, parity, quantize and end_to_end read those files; none imports NeMo or loads the
checkpoint again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from kiln.config import (Config, compile_settings, export_settings, prepare_settings, quantize_settings,
                         settings_digest, source_settings, validate_settings)
from kiln.integrity.digests import cached_digest
from kiln.foundation.errors import KilnError, SourceError
from kiln.family.spec import check_hook_result
from kiln.foundation.fsutil import atomic_path, sha256_file, tree_size, write_json
from kiln.workflow import limits
from kiln.integrity.provenance import toolchain
from kiln.sources import SourceRecord, fetch

log = logging.getLogger("kiln.jobs")
RECORD_SCHEMA_VERSION = 1


def _relative(path: str) -> str:
    """Record project paths relative to the working directory, so a clone elsewhere resolves them."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _read_json(path: str | Path, what: str) -> dict:
    from kiln.foundation import jsonio

    try:
        return jsonio.read(path)
    except jsonio.JsonFileError as exc:
        raise SourceError(f"{path}: unreadable {what} ({exc.reason}); re-run the job that writes it") from None


def _family(config: Config, model: str):
    from kiln.models import family_of

    return family_of(config.model(model))


def fetch_job(config: Config, *, model: str, record: str | Path, checkpoint_dir: str | Path) -> dict:
    """Fetch ``model``'s source and write its ``record`` (kind, id, revision, file sha256s)."""
    model_cfg = config.model(model)
    log.info("fetching %s source (%s)", model, model_cfg.source["kind"])
    random = model_cfg.source.get("kind") == "random"   # built by its family: the builder is handed down
    out_record, record = record, fetch(model, model_cfg.family, model_cfg.source, Path(checkpoint_dir),
                                       build_random=_family(config, model).make_random if random else None)
    _check_contract_source_version(model, model_cfg, record)
    for entry in record.files:
        entry.path = _relative(entry.path)
        log.info("  %s %s sha256=%s (%d bytes)", entry.role, entry.path, entry.sha256, entry.size)
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "settings_sha256": settings_digest(source_settings(model_cfg)),
        **record.as_dict(),
    }
    write_json(out_record, data)
    return data


def _check_contract_source_version(model: str, model_cfg, record: SourceRecord) -> None:
    """A real model built from another source release than its consumer loads stops at fetch, before
    any build step (the contract job checks it again beside the features)."""
    from kiln.distribution import contracts

    contract_file = contracts.contract_path(model_cfg.family)
    if contract_file.is_file():
        contracts.check_source_version(contracts.load_contract(contract_file), model=model,
                                       source_version=record.version,
                                       synthetic=model_cfg.synthetic or record.synthetic,
                                       contract_file=contract_file)


def read_source_record(path: str | Path) -> SourceRecord:
    try:
        return SourceRecord.from_dict(_read_json(path, "source record"))
    except (KeyError, TypeError) as exc:
        raise SourceError(f"{path}: unreadable source record ({exc}); re-run the fetch job") from exc


def read_facts(path: str | Path) -> dict:
    """The family facts the prepare job derived from the checkpoint."""
    return _read_json(path, "prepare record (facts.json)")["facts"]


# -- prepare: the one job that loads the source -----------------------------------------------------

def prepare_job(config: Config, *, model: str, source: str | Path, programs: dict[str, str],
                facts: str | Path, contracts: str | Path, record: str | Path) -> dict:
    """Load ``model``'s source once (``source``: its fetch record), trace every configured component
    to ``programs[component]`` (TorchScript), and write the family ``facts`` and each component's
    resolved ``contracts`` (deterministic: what later jobs read; a rewrite with the same bytes
    rebuilds nothing) and the job's ``record`` (timings, source loads, the wrappers' faithfulness
    checks)."""
    import torch

    from kiln.export.convert import trace

    out_facts, out_contracts, out_record = facts, contracts, record
    model_cfg = config.model(model)
    family = _family(config, model)
    record = read_source_record(source)
    for component in model_cfg.components.values():
        limits.check_fits(component, [f.path for f in record.files])
    started = time.perf_counter()
    log.info("loading %s from %s (the only source load of this build)", model, record.id)
    source = family.load(record)
    loaded = time.perf_counter()
    facts = check_hook_result(family.facts(source), dict, f"family {family.name}: facts(source)", json_fields=True)
    for component in model_cfg.components.values():   # config.yaml's explicit names and shapes, if any
        family.check_contract(component, facts)
    resolved = resolved_contracts(config, model, facts)
    model_cfg = config.bound(model, resolved).model(model)
    for component in model_cfg.components.values():   # now with the resolved tensors
        limits.check_fits(component, [f.path for f in record.files])
    seconds = {"load": round(loaded - started, 3)}
    for name, component in model_cfg.components.items():
        t0 = time.perf_counter()
        program = trace(family, source, component, facts)
        save_program(program, programs[name])
        del program                                 # one traced program in memory at a time
        seconds[name] = round(time.perf_counter() - t0, 3)
        log.info("  traced %s in %.1f s -> %s", name, seconds[name], programs[name])
    checks = None
    if family.faithfulness is not None:
        # the saved programs, as every later job runs them, against the source
        checks = check_hook_result(
            family.faithfulness(source, _load_programs(model_cfg, programs), facts, model_cfg.components),
            dict, f"family {family.name}: faithfulness(...)", json_fields=True)
        log.info("  faithfulness of the wrappers to the source: %s", checks)
    digest = settings_digest(prepare_settings(config.model(model)))
    write_json(out_facts, {"schema_version": RECORD_SCHEMA_VERSION, "model": model, "settings_sha256": digest,
                           "facts": facts})
    # tensors keep their declared order (the contract's order is the package's); no timings here
    write_json(out_contracts, {"schema_version": RECORD_SCHEMA_VERSION, "model": model,
                               "contracts": resolved})
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "synthetic": model_cfg.synthetic,
        "settings_sha256": digest,
        "source_loads": 1,
        "faithfulness": checks,
        # the resolved contracts are in out_contracts only (one place, what later jobs bind to)
        "programs": {n: {"path": str(p), "sha256": sha256_file(p)} for n, p in programs.items()},
        "seconds": seconds,
        "toolchain": toolchain(),
    }
    write_json(out_record, data)
    log.info("source loads for %s in this build: 1 (%.1f s); prepared %d components", model,
             seconds["load"], len(programs))
    return data


def save_program(program, path: str | Path) -> None:
    """``torch.jit.save`` to ``path`` atomically: the archive's records are named after the file it
    is saved as, so it is saved under its final name inside a private temporary folder (not as a
    random temporary file), then renamed into place; the records are then equal across builds,
    except ``.data/serialization_id``, which torch draws at random per process. Streamed to disk,
    not built in memory."""
    import tempfile

    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".dir.tmp",
                                         dir=path.parent) as staging:
            staged = Path(staging) / path.name
            torch.jit.save(program, str(staged))
            os.replace(staged, tmp)


def _verified(config: Config, model: str, component: str, artifact: str | Path) -> Path:
    """``artifact`` (a traced program or a package this job consumes), after checking its bytes are
    the ones the job that made it recorded: a corrupted or hand-edited artifact is never used."""
    from kiln.integrity.artifacts import verify_artifact
    from kiln import layout

    artifact = Path(artifact)
    if artifact.suffix == ".pt":
        recorded = _read_json(layout.PREPARE_RECORD.path(config, model=model),
                              "prepare record")["programs"][component]["sha256"]
    else:
        ios18 = artifact.parent.name == Path(layout.IOS18_PACKAGE.template).parent.name
        record = layout.IOS18_RECORD if ios18 else layout.EXPORT_RECORD
        recorded = _read_json(record.path(config, model=model, component=component),
                              "export record")["package"]["sha256"]
    verify_artifact(artifact, recorded)
    return artifact


def _weight_file(package: str | Path) -> Path:
    """A package's weights (what dominates the memory of running it); for the memory estimate."""
    return Path(package) / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


class LazyPredictors(Mapping):
    """``{component: predict}`` whose backends are made on first use and can be released: the
    full-size Parakeet encoder and mel_encoder are 2.4 GB each, so holding every component of a
    model at once (as a plain dict would) is what pushed its reference job past its memory."""

    def __init__(self, names, make):
        self.names = list(names)
        self.make = make
        self.loaded: dict = {}

    def __getitem__(self, name: str):
        if name not in self.names:
            raise KeyError(name)
        if name not in self.loaded:
            self.loaded[name] = self.make(name)
        return self.loaded[name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def release(self, name: str) -> None:
        if self.loaded.pop(name, None) is not None:
            import gc

            gc.collect()   # TorchScript modules hold reference cycles: free the weights now


def _load_programs(model_cfg, programs: Mapping[str, str | Path]) -> LazyPredictors:
    """The prepared TorchScript programs, each loaded on first use."""
    def make(name):
        import torch

        from kiln.validate.backends import torch_backend

        module = torch.jit.load(str(programs[name]), map_location="cpu").eval()
        return torch_backend(module, model_cfg.components[name]).predict

    return LazyPredictors(programs, make)


# -- reference: validation inputs and torch outputs, once per model ---------------------------------

def reference_job(config: Config, *, model: str, facts: str | Path, programs: dict[str, str],
                  references: dict[str, str], task: str | Path, task_inputs: str | Path,
                  torch_latency: str | Path) -> dict:
    """Make every component's validation inputs and run them through the traced programs (torch);
    write ``references[component]`` (.npz), the cross-component task's torch result (``task``, its
    inputs ``task_inputs``) and the programs' latency (``torch_latency``)."""
    from kiln.family.spec import Context
    from kiln.validate.reference import make_reference, write_npz, write_reference

    facts_path, out_task, out_latency = facts, task, torch_latency
    model_cfg = config.model(model)
    family = _family(config, model)
    facts = read_facts(facts_path)
    predictors = _load_programs(model_cfg, {n: _verified(config, model, n, p) for n, p in programs.items()})
    ctx = Context(family=family, model=model_cfg, facts=facts, predictors=predictors)
    summary, latency = {}, {}
    for name, component in model_cfg.components.items():
        reference = make_reference(ctx, component)
        latency[name] = reference.meta.pop("torch_latency")   # timings vary: kept out of the .npz
        write_reference(references[name], reference)
        predictors.release(name)   # reloaded on demand if another component's feeds need it
        summary[name] = {"steps": reference.steps, "description": reference.meta["description"]}
        log.info("  %s: %d steps (%s)", name, reference.steps, reference.meta["description"])
    task = family.task
    result = None
    if task is not None and task.runnable_with({c.spec for c in model_cfg.components.values()}):
        inputs = task.inputs(ctx)
        result = check_hook_result(task.run(predictors, facts, inputs), dict,
                                   f"family {family.name}: task.run(...) on torch")
        log.info("  task on torch: %s", {k: v for k, v in result.items() if not isinstance(v, list)})
    # always written (empty without a task) so the workflow can declare it
    write_npz(task_inputs, inputs if result is not None else {})
    write_json(out_latency, {"schema_version": RECORD_SCHEMA_VERSION, "model": model, "torch_cpu": latency})
    write_json(out_task, {"schema_version": RECORD_SCHEMA_VERSION, "model": model,
                          "task": None if task is None else task.description, "torch_cpu": result,
                          "components": summary})
    return summary


# -- export, compile -------------------------------------------------------------------------------

def export_job(config: Config, *, model: str, component: str, source: str | Path, program: str | Path,
               package: str | Path, record: str | Path, deployment_target: str | None = None) -> dict:
    """Convert one traced component (``program``) to ``package`` (optionally at another deployment
    target, for the quantization strategies that need iOS18) and write its ``record``."""
    import dataclasses

    import torch

    from kiln.export.convert import export_traced

    model_cfg = config.model(model)
    comp = config.component(model, component)
    if deployment_target:
        comp = dataclasses.replace(comp, export=dataclasses.replace(comp.export,
                                                                    deployment_target=deployment_target))
    out_package, out_record = package, record
    record = read_source_record(source)
    limits.check_fits(comp, [_verified(config, model, component, program)])
    # the package embeds the digest of its settings with the resolved contract (comp is bound to
    # it); the record carries the stamp's digest, known before the prepare job (kiln.workflow.stamps)
    settings = export_settings(model_cfg, comp)
    digest = settings_digest(settings)
    stamp_digest = settings_digest(export_settings(model_cfg, comp, contract=False))
    log.info("exporting %s/%s (%s, %s) from %s", model, component, comp.export.deployment_target,
             comp.export.compute_precision, program)
    started = time.perf_counter()
    traced = torch.jit.load(str(program), map_location="cpu")
    loaded = time.perf_counter() - started
    report = export_traced(traced, comp, out_package, metadata={
        "kiln.version": toolchain()["kiln"]["version"],
        "kiln.model": model,
        "kiln.component": component,
        "kiln.settings_sha256": digest,
        # a local checkpoint's id is its absolute path: embed it relative to the checkout instead
        "kiln.source": _relative(record.id) if record.kind == "path" else record.id,
        "kiln.source_sha256": ",".join(f.sha256 for f in record.files),
        "kiln.synthetic": str(model_cfg.synthetic).lower(),
    })
    report["seconds"]["load_program"] = round(loaded, 4)
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "component": component,
        "synthetic": model_cfg.synthetic,
        "settings_sha256": stamp_digest,
        "package_settings_sha256": digest,
        "settings": settings,
        "package": {
            "path": str(out_package),
            "sha256": cached_digest(out_package),
            "size_bytes": tree_size(out_package),
        },
        **report,
        "toolchain": toolchain(),
    }
    write_json(out_record, data)
    log.info("wrote %s (%d bytes) in %.1f s", out_package, data["package"]["size_bytes"],
             sum(report["seconds"].values()))
    return data


def compile_job(config: Config, *, model: str, component: str, package: str | Path, reference: str | Path,
                bundle: str | Path, record: str | Path) -> dict:
    """Compile one package to ``.mlmodelc`` (Apple's compiler where present, else kiln's), check that
    kiln's executor gives identical outputs on the bundle and the package (first validation step),
    and write the record."""
    from kiln.validate.reference import load_reference
    from kiln.compile.stage import compile_component

    out_bundle, out_record = bundle, record
    model_cfg = config.model(model)
    comp = config.component(model, component)
    check = load_reference(reference, comp).first_inputs()
    _verified(config, model, component, package)
    result = compile_component(Path(package), Path(out_bundle), model_cfg.compile, check_inputs=check)
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "component": component,
        "settings_sha256": settings_digest(compile_settings(model_cfg, comp)),
        **result,
        "toolchain": toolchain(),
    }
    write_json(out_record, data)
    return data


# -- validate ----------------------------------------------------------------------------------------

def parity_job(config: Config, *, model: str, component: str, facts: str | Path, reference: str | Path,
               package: str | Path, record: str | Path, plots_dir: str | Path) -> dict:
    """Validate one exported component against the reference outputs; write its ``record`` and its
    plots (into ``plots_dir``)."""
    from kiln.validate.reference import load_reference
    from kiln.validate.run import validate_component

    facts_path, out_record = facts, record
    model_cfg = config.model(model)
    comp = config.component(model, component)
    family = _family(config, model)
    spec = family.check_contract(comp)
    limits.check_fits(comp, [reference, _weight_file(_verified(config, model, component, package))])
    facts = read_facts(facts_path)
    runtimes = (family.source_runtime(facts, comp),) if family.source_runtime is not None else ()
    result = validate_component(spec, model_cfg, comp, facts, load_reference(reference, comp),
                                Path(package), Path(plots_dir), source_runtimes=runtimes)
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "component": component,
        "synthetic": model_cfg.synthetic,
        "settings_sha256": settings_digest(validate_settings(model_cfg, comp)),
        "package_sha256": cached_digest(package),
        **result,
    }
    write_json(out_record, data)
    status = "passed" if result["validation"]["passed"] else "FAILED (report-only)"
    log.info("parity of %s/%s %s; wrote %s", model, component, status, out_record)
    return data


def end_to_end_job(config: Config, *, model: str, facts: str | Path, task: str | Path, task_inputs: str | Path,
                   packages: dict[str, str], record: str | Path, plots_dir: str | Path | None = None) -> dict:
    """The family's cross-component task (e.g. greedy ASR decoding) through the exported packages on
    each executor mode, compared with the torch result of the reference job (``task``, its inputs
    ``task_inputs``); writes ``record``."""
    from kiln.validate.backends import kiln_backend
    from kiln.validate.reference import read_npz

    facts_path, task_record, out_record = facts, task, record
    model_cfg = config.model(model)
    family = _family(config, model)
    reference = _read_json(task_record, "task reference")
    result = None
    if reference["torch_cpu"] is None:
        log.info("%s: no cross-component task check (family %s, components %s)", model, model_cfg.family,
                 ", ".join(model_cfg.components))
    else:
        facts = read_facts(facts_path)
        inputs = read_npz(task_inputs)
        first = next(iter(model_cfg.components.values()))
        backends = {"torch_cpu": reference["torch_cpu"]}
        for precision in first.validate.precisions:
            predictors = LazyPredictors(packages, lambda name, p=precision: kiln_backend(
                _verified(config, model, name, packages[name]), p).predict)
            outcome = family.task.run(predictors, facts, inputs)
            outcome.update(family.task.compare(reference["torch_cpu"], outcome))
            backends[f"kiln_{precision}"] = outcome
            log.info("  kiln_%s: %s", precision, {k: v for k, v in outcome.items() if not isinstance(v, list)})
        result = {"task": family.task.description, "synthetic": model_cfg.synthetic, "backends": backends}
        if plots_dir is not None and family.task.plot is not None:
            title = f"{model}: {family.task.description}" + (" [synthetic weights]" if model_cfg.synthetic else "")
            result["plots"] = [str(p) for p in family.task.plot(
                Path(plots_dir), title, backends["torch_cpu"], {k: v for k, v in backends.items() if k != "torch_cpu"})]
    data = {"schema_version": RECORD_SCHEMA_VERSION, "model": model, "synthetic": model_cfg.synthetic,
            "end_to_end": result}
    write_json(out_record, data)
    return data


def metadata_job(config: Config, *, model: str, source: str | Path, prepare_record: str | Path,
                 torch_latency: str | Path, exports: list, parities: list, compiles: list,
                 end_to_end: str | Path, metadata: str | Path, plots_dir: str | Path,
                 table: str | Path | None = None) -> dict:
    """Aggregate a model's records (its ``source`` record, the ``exports``, ``parities`` and
    ``compiles`` records of its components, ...) into ``metadata`` (validated against its schema),
    the summary plot (into ``plots_dir``) and the report's parity ``table``."""
    from kiln.validate.metadata import build_metadata, latency_overview_plot, validate_metadata

    out_metadata, out_table, end_to_end_record = metadata, table, end_to_end
    metadata = build_metadata(config, model, source, exports, parities, compiles)
    for name, latency in _read_json(torch_latency, "torch latency record")["torch_cpu"].items():
        if name in metadata["components"]:
            metadata["components"][name]["latency"] = {"torch_cpu": latency,
                                                       **metadata["components"][name]["latency"]}
    prepared = _read_json(prepare_record, "prepare record")
    metadata["prepare"] = {"source_loads": prepared["source_loads"], "seconds": prepared["seconds"],
                           "faithfulness": prepared["faithfulness"]}
    metadata["end_to_end"] = _read_json(end_to_end_record, "end-to-end record")["end_to_end"]
    validate_metadata(metadata, where=str(out_metadata))
    latency_overview_plot(metadata, Path(plots_dir) / "latency.png")
    if out_table is not None:
        from kiln.distribution.report import parity_page, write_page

        write_page(out_table, parity_page(metadata))
    write_json(out_metadata, metadata)
    return metadata


# -- quantize ----------------------------------------------------------------------------------------

def quantize_job(config: Config, *, model: str, component: str, strategy: str, facts: str | Path,
                 reference: str | Path, base: str | Path, package: str | Path,
                 record: str | Path, out_dir: str | Path, threads: int = 1,
                 program: str | Path | None = None) -> dict:
    """Build, compile and score one quantized variant of ``base`` (the float ``package`` or its
    iOS18 re-export) into ``out_dir``, or record a named skip (``record``); with the component's
    traced ``program``, check kiln's execution of it against torch on its dequantized weights
    (recorded as ``dequantized_torch``)."""
    from kiln.quantize.run import quantize_component
    from kiln.validate.reference import load_reference

    facts_path, base_package, float_package, out_record = facts, base, package, record
    model_cfg = config.model(model)
    comp = config.component(model, component)
    spec = _family(config, model).check_contract(comp)
    limits.check_fits(comp, [reference, _weight_file(_verified(config, model, component, base_package)),
                             _weight_file(_verified(config, model, component, float_package)),
                             *([_verified(config, model, component, program)] if program is not None else [])])
    result = quantize_component(spec, model_cfg, comp, read_facts(facts_path), load_reference(reference, comp),
                                strategy, Path(base_package), Path(float_package), Path(out_dir),
                                workers=threads, program=None if program is None else Path(program))
    data = {"schema_version": RECORD_SCHEMA_VERSION, "model": model,
            "settings_sha256": settings_digest(quantize_settings(model_cfg, comp, strategy)), **result}
    write_json(out_record, data)
    return data


def quantized_task_check(config: Config, model: str, records: list[dict], facts_path: str | Path,
                         task_record: str | Path, task_inputs: str | Path,
                         packages: Mapping[str, str]) -> dict | None:
    """The family's task with each quantized variant swapped in for its component (the other
    components float), all on kiln's executor in fp32 mode, judged against the same task on the
    float packages (so only the weights differ) by the family's ``task.quantization`` hook.
    None when the family has no such hook or the model has no task reference."""
    from kiln.integrity.artifacts import verify_artifact
    from kiln.validate.backends import kiln_backend
    from kiln.validate.reference import read_npz

    family = _family(config, model)
    task = family.task
    reference = _read_json(task_record, "task reference")
    if task is None or task.quantization is None or reference["torch_cpu"] is None:
        return None
    facts = read_facts(facts_path)
    inputs = read_npz(task_inputs)
    floats = LazyPredictors(packages, lambda name: kiln_backend(
        _verified(config, model, name, packages[name]), "fp32").predict)
    started = time.perf_counter()
    float_result = task.run(floats, facts, inputs)
    by_component: dict[str, dict] = {}
    for record in records:
        if record["status"] != "ok" or record["component"] not in packages:
            continue
        quantized = Path(record["package"]["path"])
        verify_artifact(quantized, record["package"]["sha256"])
        swapped = _Swapped(floats, record["component"], kiln_backend(quantized, "fp32").predict)
        by_component.setdefault(record["component"], {})[record["strategy"]] = task.run(swapped, facts, inputs)
        log.info("  task with %s/%s swapped in: done", record["strategy"], record["component"])
    from kiln.family.spec import check_quantization_result

    checks = {component: check_quantization_result(task.quantization(float_result, results, component),
                                                   family.name, component)
              for component, results in sorted(by_component.items())}
    return {"task": task.description, "backend": "kiln_fp32 (float packages vs one quantized component)",
            "seconds": round(time.perf_counter() - started, 2), "components": checks}


class _Swapped(Mapping):
    """``predictors`` with one component replaced."""

    def __init__(self, predictors: Mapping, component: str, predict):
        self.predictors, self.component, self.predict = predictors, component, predict

    def __getitem__(self, name: str):
        return self.predict if name == self.component else self.predictors[name]

    def __iter__(self):
        return iter(self.predictors)

    def __len__(self) -> int:
        return len(self.predictors)


def judge_variants(config: Config, model: str, records: list[dict], facts_path: str | Path) -> None:
    """Add the family's task metrics (and ``task_score``) to every built variant's record, from the
    baseline's and the variant's outputs its quantize job recorded (``steps_file``, checked against
    its sha256): judging code runs here, so a metric edit re-runs this job, not the quantize jobs."""
    from kiln.integrity.artifacts import verify_artifact
    from kiln.quantize.run import read_steps, task_scores

    family = _family(config, model)
    facts = read_facts(facts_path)
    for record in records:
        if record["status"] != "ok":
            continue
        steps_file = record.pop("steps_file", None)
        if steps_file is None:
            raise KilnError(f"{model}: the quantization record of {record['strategy']}/{record['component']} "
                            f"has no steps_file (written by an older kiln); re-run its quantize job")
        verify_artifact(steps_file["path"], steps_file["sha256"])
        record.update(task_scores(family.spec_of(config.component(model, record["component"])), read_steps(steps_file["path"]), facts))


def quantization_summary_job(config: Config, *, model: str, records: list, summary: str | Path,
                             strategies_plot: str | Path, table: str | Path,
                             facts: str | Path | None = None, task: str | Path | None = None,
                             task_inputs: str | Path | None = None,
                             packages: Mapping[str, str] | None = None) -> dict:
    """A model's quantization ``summary`` (from its quantization ``records``), its
    ``strategies_plot`` and its report ``table``; with the family's task (``facts``, the ``task``
    record and its ``task_inputs``, the float ``packages``), each quantized variant judged on it."""
    from kiln.quantize.summary import build_summary, plot_strategies, validate_summary
    from kiln.distribution.report import quantization_page, write_page

    out_summary, out_strategies_plot, out_table = summary, strategies_plot, table
    facts_path, task_record = facts, task
    loaded = []
    for path in records:
        record = _read_json(path, "quantization record")
        record.pop("schema_version", None)
        record.pop("model", None)
        record.pop("settings_sha256", None)
        loaded.append(record)
    if facts_path is not None:
        judge_variants(config, model, loaded, facts_path)
    task = None
    if task_record is not None and facts_path is not None and task_inputs is not None and packages:
        task = quantized_task_check(config, model, loaded, facts_path, task_record, task_inputs, packages)
    summary = build_summary(model, config.model(model).synthetic, loaded, task=task)
    validate_summary(summary, where=str(out_summary))
    plot_strategies(summary, Path(out_strategies_plot))
    write_page(out_table, quantization_page(summary))
    write_json(out_summary, summary)
    return summary


def quantization_plot_job(config: Config, *, model: str, component: str, summary: str | Path,
                          plot: str | Path) -> str:
    """Size vs quality of one component's strategies (``plot``), from the model's quantization ``summary``."""
    from kiln.quantize.summary import plot_component

    return plot_component(_read_json(summary, "quantization summary"), component, Path(plot))


# -- consumer contract -------------------------------------------------------------------------------

def resolved_contracts(config: Config, model: str, facts: Mapping) -> dict:
    """``{component: {"inputs"|"outputs": {name: {shape, dtype}}}}``: each component's contract as
    its family's resolver gives it from ``facts`` and the entry's options (a config block's own
    shapes for a family without a symbolic contract, e.g. plain, whose block is the contract)."""
    from kiln.family.contract import features

    model_cfg = config.model(model)
    family = _family(config, model)
    return {name: family.resolved_contract(c, facts) or features(c) for name, c in model_cfg.components.items()}


def contract_job(config: Config, *, model: str, contract: str | Path, facts: str | Path,
                 source: str | Path, packages: Mapping[str, str], bundles: Mapping[str, str],
                 report: str | Path) -> dict:
    """Check the model's packages and bundles (feature names, shapes, dtypes) and facts (the numbers
    and control-token ids the consumer hard-codes) against its family's consumer ``contract``; write
    the ``report``, or fail with the diff (:class:`kiln.distribution.contracts.ContractMismatch`)."""
    from kiln.distribution import contracts

    contract_file, facts_path, source_record, out_report = contract, facts, source, report

    model_cfg = config.model(model)
    contract = contracts.load_contract(contract_file)
    if contract["family"] != model_cfg.family:
        raise contracts.ContractSchemaError(f"{contract_file}: is the contract of family {contract['family']}, "
                                            f"model {model} is {model_cfg.family}")
    artifacts = {c: {Path(p).name: contracts.artifact_features(p)
                     for p in (_verified(config, model, c, packages[c]), bundles[c])}
                 for c in model_cfg.components if c in contract["components"]}
    facts = read_facts(facts_path)
    report = contracts.check_model(contract, model=model, components=list(model_cfg.components),
                                   synthetic=model_cfg.synthetic, facts=facts,
                                   resolved=resolved_contracts(config, model, facts), artifacts=artifacts, source_version=read_source_record(source_record).version,
                                   contract_file=str(contract_file),
                                   specs={n: c.spec for n, c in model_cfg.components.items()})
    write_json(out_report, report)
    log.info("%s matches %s's contract (%s): %s", model, contract["consumer"], contract_file,
             ", ".join(f"{c} -> {n}" for c, n in report["published_names"].items()))
    return report
