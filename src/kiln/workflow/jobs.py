"""The workflow's jobs as plain functions: Snakemake scripts call these, tests call them directly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kiln.config import Config, export_settings, settings_digest, source_settings
from kiln.errors import SourceError
from kiln.fsutil import sha256_tree, tree_size, write_json
from kiln.workflow import limits
from kiln.provenance import toolchain
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


def fetch_job(config: Config, model: str, out_record: str | Path, checkpoint_dir: str | Path) -> dict:
    """Fetch ``model``'s source and write its record (kind, id, revision, file sha256s)."""
    model_cfg = config.model(model)
    log.info("fetching %s source (%s)", model, model_cfg.source["kind"])
    record = fetch(model, model_cfg.family, model_cfg.source, Path(checkpoint_dir))
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


def read_source_record(path: str | Path) -> SourceRecord:
    try:
        return SourceRecord.from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"{path}: unreadable source record ({exc}); re-run the fetch job") from exc


def export_job(config: Config, model: str, component: str, source_record: str | Path,
               out_package: str | Path, out_record: str | Path) -> dict:
    """Export one component to ``out_package`` and write its record."""
    from kiln.export.convert import export_component  # torch + coremltools: only in the job
    from kiln.models import get_family

    model_cfg = config.model(model)
    comp = config.component(model, component)
    family = get_family(model_cfg.family)
    record = read_source_record(source_record)
    limits.check_fits(comp, [f.path for f in record.files])
    log.info("loading %s from %s", model, record.id)
    source = family.load_source(record)
    settings = export_settings(model_cfg, comp)
    digest = settings_digest(settings)
    log.info("exporting %s/%s (%s, %s)", model, component, comp.export.deployment_target,
             comp.export.compute_precision)
    report = export_component(family, source, comp, out_package, metadata={
        "kiln.version": toolchain()["kiln"]["version"],
        "kiln.model": model,
        "kiln.component": component,
        "kiln.settings_sha256": digest,
        "kiln.source": record.id,
        "kiln.source_sha256": ",".join(f.sha256 for f in record.files),
        "kiln.synthetic": str(model_cfg.synthetic).lower(),
    })
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "component": component,
        "synthetic": model_cfg.synthetic,
        "settings_sha256": digest,
        "settings": settings,
        "package": {
            "path": str(out_package),
            "sha256": sha256_tree(out_package),
            "size_bytes": tree_size(out_package),
        },
        **report,
        "toolchain": toolchain(),
    }
    write_json(out_record, data)
    log.info("wrote %s (%d bytes) in %.1f s", out_package, data["package"]["size_bytes"],
             sum(report["seconds"].values()))
    return data


def parity_job(config: Config, model: str, component: str, source_record: str | Path,
               package: str | Path, out_record: str | Path, plots_dir: str | Path) -> dict:
    """Validate one exported component against its source; write its parity record and plots."""
    from kiln.config import validate_settings
    from kiln.models import get_family
    from kiln.validate.run import validate_component

    model_cfg = config.model(model)
    comp = config.component(model, component)
    family = get_family(model_cfg.family)
    record = read_source_record(source_record)
    limits.check_fits(comp, [f.path for f in record.files])
    source = family.load_source(record)
    result = validate_component(family, source, model_cfg, comp, Path(package), Path(plots_dir))
    data = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "model": model,
        "component": component,
        "synthetic": model_cfg.synthetic,
        "settings_sha256": settings_digest(validate_settings(model_cfg, comp)),
        "package_sha256": sha256_tree(package),
        **result,
    }
    write_json(out_record, data)
    status = "passed" if result["validation"]["passed"] else "FAILED (report-only)"
    log.info("parity of %s/%s %s; wrote %s", model, component, status, out_record)
    return data


def metadata_job(config: Config, model: str, source_record: str | Path, export_records: list,
                 parity_records: list, compile_records: list, end_to_end_record: str | Path,
                 out_metadata: str | Path, plots_dir: str | Path) -> dict:
    """Aggregate a model's records into metadata.json (validated against its schema) + summary plot."""
    from kiln.validate.metadata import build_metadata, latency_overview_plot, validate_metadata

    metadata = build_metadata(config, model, source_record, export_records, parity_records, compile_records)
    metadata["end_to_end"] = json.loads(Path(end_to_end_record).read_text())["end_to_end"]
    validate_metadata(metadata, where=str(out_metadata))
    latency_overview_plot(metadata, Path(plots_dir) / "latency.png")
    write_json(out_metadata, metadata)
    return metadata


def compile_job(config: Config, model: str, component: str, package: str | Path,
                out_bundle: str | Path, out_record: str | Path) -> dict:
    """Compile one package to ``.mlmodelc`` (Apple's compiler where present, else kiln's), check that
    kiln's executor gives identical outputs on the bundle and the package, and write the record."""
    from kiln.config import compile_settings
    from kiln.workflow.compile_stage import compile_component

    model_cfg = config.model(model)
    comp = config.component(model, component)
    result = compile_component(Path(package), Path(out_bundle), model_cfg.compile,
                               check_inputs=_example_inputs(model_cfg, comp))
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


def _example_inputs(model_cfg, comp):
    from kiln.models import get_family

    return get_family(model_cfg.family).example_inputs(comp, seed=1)


def quantize_job(config: Config, model: str, component: str, strategy: str, source_record: str | Path,
                 package: str | Path, out_record: str | Path, out_dir: str | Path, threads: int = 1) -> dict:
    """Build, compile and score one quantized variant (or record a named skip)."""
    from kiln.config import quantize_settings
    from kiln.models import get_family
    from kiln.quantize.run import quantize_component

    model_cfg = config.model(model)
    comp = config.component(model, component)
    family = get_family(model_cfg.family)
    record = read_source_record(source_record)
    limits.check_fits(comp, [f.path for f in record.files])
    source = family.load_source(record)
    result = quantize_component(family, source, model_cfg, comp, strategy, Path(package), Path(out_dir),
                                workers=threads)
    data = {"schema_version": RECORD_SCHEMA_VERSION, "model": model,
            "settings_sha256": settings_digest(quantize_settings(model_cfg, comp, strategy)), **result}
    write_json(out_record, data)
    return data


def quantization_summary_job(config: Config, model: str, records: list, out_summary: str | Path,
                             plots_dir: str | Path) -> dict:
    from kiln.quantize.summary import build_summary, plot_summary, validate_summary

    loaded = []
    for path in records:
        record = json.loads(Path(path).read_text())
        record.pop("schema_version", None)
        record.pop("model", None)
        record.pop("settings_sha256", None)
        loaded.append(record)
    summary = build_summary(model, config.model(model).synthetic, loaded)
    validate_summary(summary, where=str(out_summary))
    plot_summary(summary, Path(plots_dir))
    write_json(out_summary, summary)
    return summary


def end_to_end_job(config: Config, model: str, source_record: str | Path, packages: list,
                   out_record: str | Path) -> dict:
    """The family's cross-component task check (e.g. greedy ASR decoding) on torch and on each
    executor mode, through the exported packages."""
    from kiln.models import get_family
    from kiln.validate.backends import kiln_backend, torch_backend

    model_cfg = config.model(model)
    family = get_family(model_cfg.family)
    record = read_source_record(source_record)
    for comp in model_cfg.components.values():
        limits.check_fits(comp, [f.path for f in record.files])
    source = family.load_source(record)
    names = list(model_cfg.components)
    first = model_cfg.components[names[0]]
    backends = {"torch_cpu": {}}
    for name, package in zip(names, packages):
        comp = model_cfg.components[name]
        backends["torch_cpu"][name] = torch_backend(family.build_component(source, comp), comp).predict
        for precision in first.validate.precisions:
            backends.setdefault(f"kiln_{precision}", {})[name] = kiln_backend(Path(package), precision).predict
    result = family.end_to_end(model_cfg, backends, family.validation_audio(first))
    if result is None:
        log.info("%s: the %s family has no cross-component task check", model, model_cfg.family)
    else:
        for backend, outcome in (result.get("backends") or {}).items():
            log.info("  %s: %s", backend, {k: v for k, v in outcome.items() if not isinstance(v, list)})
    data = {"schema_version": RECORD_SCHEMA_VERSION, "model": model, "synthetic": model_cfg.synthetic,
            "end_to_end": result}
    write_json(out_record, data)
    return data
