"""`snakemake --report`: a self-contained HTML report with every plot and summary table of every
built model, grouped by model; rendered in headless Chromium (a screenshot of a plot and the DOM)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import pytest

from tests.helpers.workspaces import BUILT_MODELS

pytestmark = pytest.mark.slow

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _embedded(html: str, name: str) -> dict:
    found = re.search(rf"var {name} = (\{{.*?\}});\n", html, re.S)
    assert found, f"the report has no '{name}' table"
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def report(built_workspace):
    path = built_workspace.root / "report.html"
    built_workspace.snakemake("--report", str(path))
    return path


def expected_results(model: str) -> dict[str, set[str]]:
    """subcategory -> result paths the report must show for ``model`` (one component: unified)."""
    return {
        "unified": {f"results/{model}/plots/unified_parity.png", f"results/{model}/plots/unified_latency.png",
                    f"results/{model}/plots/unified_fp16.png"},
        "summary": {f"results/{model}/plots/latency.png", f"results/{model}/tables/parity.html"},
        "quantization": {f"results/{model}/plots/quantization/strategies.png",
                         f"results/{model}/plots/quantization/size_vs_quality_unified.png",
                         f"results/{model}/tables/quantization.html"},
    }


def test_report_groups_every_plot_and_table_by_model(built_workspace, report):
    html = report.read_text()
    categories = _embedded(html, "categories")
    results = _embedded(html, "results")
    assert set(categories) == set(BUILT_MODELS)
    for model in BUILT_MODELS:
        expected = expected_results(model)
        assert {sub: set(paths) for sub, paths in categories[model].items()} == expected
        for path in set().union(*expected.values()):
            entry = results[path]
            # self-contained: the file's exact bytes are inside the report
            data = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
            assert data == (built_workspace.root / path).read_bytes(), path
            assert model in entry["caption"], (path, entry["caption"])
    # no external resources: scripts and styles are inline
    assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', html)


def test_report_tables_hold_the_recorded_numbers(built_workspace):
    metadata = json.loads((built_workspace.root / "results/silero_vad_onnx/metadata.json").read_text())
    table = (built_workspace.root / "results/silero_vad_onnx/tables/parity.html").read_text()
    for entry in metadata["components"]["unified"]["parity"]:
        assert f"<td class=\"\">{entry['max_abs']:.4g}</td>" in table
    assert "absent: Apple&#x27;s Core ML runtime exists only on macOS" in table
    summary = json.loads((built_workspace.root / "results/silero_vad/quantization_summary.json").read_text())
    quant = (built_workspace.root / "results/silero_vad/tables/quantization.html").read_text()
    for row in summary["results"]:
        assert row["strategy"] in quant and f"{row['size_ratio']:.4g}" in quant


def test_onnx_model_parity_is_three_way(built_workspace):
    """The ONNX-sourced model's metadata: onnxruntime (original file) vs the onnx2torch module, and
    kiln's executor on the package vs both, every output within its tolerance, decisions equal."""
    metadata = json.loads((built_workspace.root / "results/silero_vad_onnx/metadata.json").read_text())
    assert metadata["source"]["kind"] == "onnx"
    component = metadata["components"]["unified"]
    pairs = {(e["backend"], e["reference"]) for e in component["parity"]}
    assert pairs == {("onnxruntime", "torch_cpu"), ("kiln_fp32", "torch_cpu"), ("kiln_fp16", "torch_cpu"),
                     ("kiln_fp32", "onnxruntime"), ("kiln_fp16", "onnxruntime")}
    assert all(e["match"] for e in component["parity"])
    ort_vs_torch = [e["max_abs"] for e in component["parity"] if e["backend"] == "onnxruntime"]
    assert max(ort_vs_torch) < 1e-4
    for backend in ("onnxruntime", "kiln_fp32", "kiln_fp16"):
        assert component["task_metrics"][backend]["decision_agreement"] == 1.0


def _drive(report_html: str, path: str) -> str:
    """The report with a script that does what clicking the result ``path`` does: show it through
    the report app's own view API."""
    script = (f"<script>window.addEventListener('load', () => setTimeout(() => "
              f"app.setView({{content: 'img', contentPath: results[{json.dumps(path)}].data_uri, "
              f"resultPath: {json.dumps(path)}}}), 100));</script>")
    head, tag, tail = report_html.rpartition("</body>")   # the last one: the bundled JS holds others
    return head + script + tag + tail


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: install Debian's chromium (make system-deps)")
def test_report_renders_a_plot_in_headless_chromium(report, tmp_path):
    from PIL import Image

    plot = "results/silero_vad_onnx/plots/unified_parity.png"
    page = tmp_path / "report.html"
    page.write_text(_drive(report.read_text(), plot))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=15000", "--window-size=1400,1000"]
    screenshot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={screenshot}", page.as_uri()], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    # the app ran (React rendered its navigation) and shows the plot, the embedded file's bytes
    assert ">Results<" in dom and ">Workflow<" in dom
    shown = re.search(r'<img[^>]+src="data:image/png;charset=utf8;filename=unified_parity.png;base64,([^"]+)"', dom)
    assert shown, "the plot is not shown"
    assert base64.b64decode(shown.group(1)) == (report.parent / plot).read_bytes()
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1400, 1000)
    # the plot occupies the content area: many non-background pixels, and the lines matplotlib
    # draws in its first colour (#1f77b4) are visible
    content = image.crop((300, 0, 1400, 1000))
    pixels = list(content.get_flattened_data() if hasattr(content, "get_flattened_data") else content.getdata())
    non_white = sum(1 for p in pixels if sum(p) < 700)
    blue = sum(1 for r, g, b in pixels if abs(r - 0x1f) < 40 and abs(g - 0x77) < 40 and abs(b - 0xb4) < 40)
    assert non_white > 50_000, non_white   # the report's home page: ~27,000
    assert blue > 500, blue
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert buffer.tell() > 0
