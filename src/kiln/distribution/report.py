"""Summary tables for ``snakemake --report``: small self-contained HTML pages, one per model and
topic, that Snakemake's report shows inline beside the plots (it renders ``text/html`` results).

``tables/parity.html`` (written by the metadata job): per component, output and backend the parity
figures and what they are compared with, task metrics and latency. ``tables/quantization.html``
(written by the quantization summary job): size, quality, PSNR and latency per strategy.
Numbers come straight from ``metadata.json`` / ``quantization_summary.json``; absent backends show
their reason, never a number.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Iterable, Sequence

from kiln.foundation.fsutil import atomic_file

STYLE = ("body{font-family:sans-serif;font-size:13px;margin:8px}table{border-collapse:collapse;margin:6px 0 16px}"
         "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f1f1f1}"
         "td.l,th.l{text-align:left}td.bad{background:#fde0e0}h2{font-size:15px;margin:14px 0 4px}"
         "p.note{color:#555}")


def format_value(value: Any, digits: int = 4, *, false: str = "NO") -> str:
    """A table cell's text, shared by the report's HTML tables and the model card's markdown:
    "–" for an absent figure (never a number), yes/``false`` for a check, ``digits`` significant
    digits for a float."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else false
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _cell(value: Any, digits: int = 4) -> str:
    return html.escape(format_value(value, digits))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1,
          bad: Iterable[int] = ()) -> str:
    """An HTML table; the first ``left`` columns are text (left-aligned); ``bad`` row indices are marked."""
    bad = set(bad)
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="{"l" if i < left else ""}{" bad" if r in bad else ""}">{_cell(v)}</td>'
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: Sequence[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1 style=\"font-size:17px\">{html.escape(title)}</h1>"
            f"{''.join(sections)}</body></html>\n")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def parity_page(metadata: dict) -> str:
    """Parity, task metrics and latency of every component of one model."""
    tag = " [synthetic weights]" if metadata.get("synthetic") else ""
    sections = [f"<p class=\"note\">source: {html.escape(str(metadata['source'].get('kind')))} "
                f"{html.escape(str(metadata['source'].get('id')))}{tag}</p>"]
    for name, comp in metadata["components"].items():
        entries = comp["parity"]
        rows = [(e["output"], e["backend"], e.get("reference", comp["validation"].get("reference_backend")),
                 e["max_abs"], e["max_rel"], e["psnr_db"], e.get("quality"), e.get("agreement"), e["match"])
                for e in entries]
        sections.append(f"<h2>{html.escape(name)}: parity ({html.escape(comp['validation'].get('inputs', ''))})</h2>")
        sections.append(table(["output", "backend", "compared with", "max |err|", "max rel", "PSNR dB",
                               "quality", "agreement", "match"], rows, left=3,
                              bad=[i for i, e in enumerate(entries) if not e["match"]]))
        kinded = [e for e in entries if e.get("by_kind")]
        if kinded:   # outputs that declare a kind: the metrics it picks (kiln.validate.kinds)
            sections.append(table(["output", "backend", "kind", "judged by its kind"], [
                (e["output"], e["backend"], e["by_kind"]["kind"],
                 ", ".join(f"{k} {_short(v)}" for k, v in e["by_kind"].items() if k != "kind")) for e in kinded],
                left=4))
        metrics = comp.get("task_metrics") or {}
        keys = sorted({k for m in metrics.values() for k, v in m.items() if not isinstance(v, (list, dict))})
        if keys:
            sections.append(table(["backend", *keys], [(b, *(m.get(k) for k in keys)) for b, m in metrics.items()]))
        latency = comp.get("latency") or {}
        absent = comp.get("absent_backends") or {}
        errors = comp.get("backend_errors") or {}
        unmeasured = {**{b: f"absent: {why}" for b, why in absent.items()},
                      **{b: f"executor error: op {e['op']}: {e['message']}" for b, e in errors.items()}}
        sections.append(table(["backend", "median ms", "p90 ms", "calls"],
                              [(b, *((v["median_ms"], v["p90_ms"], v["calls"]) if v else
                                     (unmeasured.get(b, "absent: not measured"), None, None)))
                               for b, v in latency.items()]))
        package = comp.get("package") or {}
        sections.append(f"<p class=\"note\">package {html.escape(str(package.get('path')))}: "
                        f"{package.get('size_bytes')} bytes, sha256 {html.escape(str(package.get('sha256')))}</p>")
    return page(f"{metadata['model']}: parity, task metrics, latency", sections)


def quantization_page(summary: dict) -> str:
    """Every quantization strategy of one model: size, quality and speed, or the named skip."""
    rows, bad = [], []
    for i, r in enumerate(summary["results"]):
        ok = r.get("status") == "ok"
        psnrs = [o.get("psnr_db") for o in (r.get("outputs") or {}).values() if o.get("psnr_db") is not None]
        latency = (r.get("latency") or {}).get("kiln_fp32") or {}
        task = r.get("task_score")
        rows.append((r["component"], r["strategy"], "ok" if ok else f"{r.get('status')}: {r.get('skip_reason', '')}",
                     r.get("rank"), f"{task['metric']} {task['value']:.4f}" if task else None,
                     (r.get("package") or {}).get("size_bytes"), r.get("size_ratio"), r.get("quality"),
                     r.get("normalized_error"), min(psnrs) if psnrs else None, r.get("pareto_optimal"),
                     _dequantized_cell(r.get("dequantized_torch")), latency.get("median_ms")))
        if not ok or (r.get("dequantized_torch") or {}).get("verdict") == "different":
            bad.append(i)
    tag = " [synthetic weights]" if summary.get("synthetic") else ""
    rankings = "; ".join(f"{c}: by {k['by']}: {', '.join(k['order'])}" for c, k in (summary.get("rankings") or {}).items())
    return page(f"{summary['model']}: quantization{tag}", [
        f"<p class=\"note\">{html.escape(summary.get('quality_definition', ''))}</p>",
        *([f"<p class=\"note\">ranking, best first: {html.escape(rankings)}</p>"] if rankings else []),
        table(["component", "strategy", "status", "rank", "task metric", "package bytes", "size ratio", "quality",
               "normalised error", "worst PSNR dB", "Pareto", "kiln vs dequantized torch (max |diff|)",
               "kiln fp32 median ms"], rows, left=3, bad=bad)])


def _dequantized_cell(check: dict | None) -> str | None:
    """The quantize job's check of kiln vs torch on the variant's dequantized weights, in a cell."""
    if not check:
        return None
    if check["verdict"] == "not_checked":
        return f"not checked: {check.get('reason', '')}"
    worst = max((o["max_abs"] for o in check["outputs"].values() if o.get("max_abs") is not None), default=None)
    return check["verdict"] + ("" if worst is None else f" ({worst:.2g})")


def write_page(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)
