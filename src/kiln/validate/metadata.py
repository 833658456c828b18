"""``results/<model>/metadata.json``: provenance, toolchain, export settings and, per component, the
contract, package hash and size, parity per output and backend, task metrics and latency.

The file has a JSON schema (``kiln/schemas/metadata.schema.json``, with a ``schema_version``); every
write is validated against it.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from kiln import schemas
from kiln.config import Config
from kiln.foundation.errors import KilnError
from kiln.integrity.provenance import toolchain
from kiln.validate.backends import apple_available

SCHEMA_VERSION = 1


class MetadataError(KilnError):
    """metadata.json does not satisfy its schema."""


def schema() -> dict:
    return schemas.load("metadata")


def validate_metadata(metadata: dict, where: str = "metadata.json") -> None:
    schemas.check(metadata, "metadata", MetadataError, where)


def _read(path) -> dict:
    return json.loads(Path(path).read_text())


def build_metadata(config: Config, model: str, source_record, export_records, parity_records,
                   compile_records=()) -> dict:
    model_cfg = config.model(model)
    source = _read(source_record)
    exports = {r["component"]: r for r in map(_read, export_records)}
    parities = {r["component"]: r for r in map(_read, parity_records)}
    compiles = {r["component"]: r for r in map(_read, compile_records)}
    components = {}
    for name, comp in model_cfg.components.items():
        export, parity = exports[name], parities[name]
        components[name] = {
            "description": comp.description,
            # fp32_op_types: ops the fp16 compute policy kept in fp32 (kiln.export.precision)
            "export": {**comp.export.as_dict(), "fp32_op_types": export.get("fp32_op_types", {})},
            "package": {**export["package"], "specification_version": export["specification_version"],
                        "opset": export["opset"]},
            "compiled": {k: v for k, v in compiles[name].items()
                         if k not in ("schema_version", "model", "component", "settings_sha256", "toolchain")}
                        if name in compiles else None,
            "inputs": [t.as_dict() for t in comp.inputs],
            "outputs": [t.as_dict() for t in comp.outputs],
            "export_seconds": export["seconds"],
            "validation": parity["validation"],
            "parity": parity["parity"],
            "task_metrics": parity["task_metrics"],
            "latency": parity["latency"],
            "absent_backends": parity["absent_backends"],
            "backend_errors": parity.get("backend_errors", {}),
            "fp16_report": parity.get("fp16_report"),
            "plots": parity["plots"],
        }
    apple_reason = apple_available()
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "family": model_cfg.family,
        "task": model_cfg.task,
        "synthetic": model_cfg.synthetic,
        "source": {k: source[k] for k in ("kind", "id", "revision", "version", "synthetic", "files", "details")},
        "toolchain": toolchain(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "apple_runtime": apple_reason is None,
            "apple_runtime_absent_reason": apple_reason,
        },
        "components": components,
    }


def latency_overview_plot(metadata: dict, path: Path) -> None:
    """Grouped bars: median latency per component and backend."""
    from kiln.validate.plots import _pyplot, _save

    plt = _pyplot()
    components = list(metadata["components"])
    backends = sorted({b for c in metadata["components"].values() for b, v in c["latency"].items() if v})
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.9 * len(components)))
    height = 0.8 / max(1, len(backends))
    for i, backend in enumerate(backends):
        values = [(metadata["components"][c]["latency"].get(backend) or {}).get("median_ms", 0.0) for c in components]
        ax.barh([y + i * height for y in range(len(components))], values, height=height, label=backend)
    ax.set_yticks([y + height * (len(backends) - 1) / 2 for y in range(len(components))], components)
    ax.set_xscale("log")
    ax.set_xlabel("median latency per call (ms, log scale)")
    title = f"{metadata['model']}: latency per backend"
    if metadata["synthetic"]:
        title += " [synthetic weights]"
    if not metadata["platform"]["apple_runtime"]:
        title += "\n(Apple runtime absent on this machine: not measured)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)
    plt.close(fig)
