"""One layout: every results path is spelled in kiln.layout, and what the rules build is in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln import layout
from tests.helpers.workspaces import REPO, copy_workflow

#: how a results path is spelled by hand: an f-string on the rules' RESULTS, a path joined onto the
#: results directory or onto a model's results folder, the default folder name as a literal
HAND_SPELLED = [re.compile(p) for p in (
    r"\{RESULTS\}", r"\bRESULTS\s*[/+]", r"results_dir\)?\s*/", r"[\"']results/", r"\bmodel_dir\s*/\s*f?[\"']",
    r"\{(?:config\.|KILN\.)?results_dir\}")]


def hand_spelled(root: Path) -> list[str]:
    """``file:line: text`` of every hand-spelled results path in the workflow's code under ``root``."""
    files = [root / "Snakefile", *sorted((root / "rules").glob("*.smk")), *sorted((root / "scripts").glob("*.py")),
             *sorted((root / "src").rglob("*.py"))]
    found = []
    for path in files:
        if path == root / "src" / "kiln" / "layout.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = "" if line.lstrip().startswith("#") else line
            if any(p.search(code) for p in HAND_SPELLED):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_results_path_is_spelled_outside_the_layout():
    assert hand_spelled(REPO) == []


def test_the_scan_finds_a_hand_spelled_path(tmp_path):
    """The scan above is not vacuous: the spellings the layout replaced are found again."""
    for rel, text in {"rules/validate.smk": 'facts=f"{RESULTS}/{{model}}/prepared/facts.json",\n',
                      "src/kiln/distribution/publish.py": 'facts = (model_dir / "prepared" / "facts.json")\n',
                      "src/kiln/workflow/plan.py": 'return Path(config.results_dir) / model / "metadata.json"\n',
                      "scripts/parity.py": 'plots = "results/silero_vad/plots"\n',
                      "Snakefile": "# a comment may say results/<model>/metadata.json\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert [f.split(":")[0] for f in hand_spelled(tmp_path)] == [
        "rules/validate.smk", "scripts/parity.py", "src/kiln/distribution/publish.py", "src/kiln/workflow/plan.py"]


def test_pattern_and_path_are_one_definition():
    assert len({a.template for a in layout.ARTIFACTS.values()}) == len(layout.ARTIFACTS)
    values = {"model": "m", "component": "c", "strategy": "s"}
    for artifact in layout.ARTIFACTS.values():
        given = {w: values[w] for w in artifact.wildcards}
        assert artifact.pattern("out", **given) == str(artifact.path("out", **given)), artifact.name
        assert artifact.pattern("out") == str(Path("out") / artifact.template)
    assert layout.QUANTIZE_RECORD.pattern("results", model="m") == "results/m/quantized/{strategy}/{component}.json"
    # a model's folder wherever it lies (a folder being verified): the same template
    assert layout.PARITY_PLOT.in_model_dir("elsewhere/m", component="c") == Path("elsewhere/m/plots/c_parity.png")
    with pytest.raises(TypeError, match="ledger.*not inside a model's folder"):
        layout.LEDGER.in_model_dir("elsewhere/m")
    with pytest.raises(TypeError, match="facts.*missing wildcard.*model"):
        layout.FACTS.path("results")
    with pytest.raises(TypeError, match="facts.*unknown wildcard.*component"):
        layout.FACTS.path("results", model="m", component="c")


def _artifact_regex(artifact: layout.Artifact, results: str) -> re.Pattern:
    parts = re.split(r"(\{\w+\})", artifact.template)
    return re.compile(re.escape(results + "/") + "".join("[^/]+" if p.startswith("{") else re.escape(p)
                                                         for p in parts) + "$")


@pytest.mark.slow
def test_every_results_file_the_rules_declare_is_in_the_layout(tmp_path):
    """A dry run of every model's targets: each input and output under results/ is an artifact of
    the layout (and the results folder is the configured one)."""
    ws = copy_workflow(tmp_path / "kiln")
    ws.edit_config(lambda c: c.update({"results_dir": "built"}))
    models = [m for m in __import__("yaml").safe_load((ws.root / "config.yaml").read_text())["models"]]
    out = ws.snakemake("-n", "--forceall", *(f"all_{m}" for m in models)).stdout
    declared = {p for line in re.findall(r"^\s+(?:input|output): (.*)$", out, re.M) for p in line.split(", ")}
    built = sorted(p for p in declared if p.startswith("built/"))
    assert not [p for p in declared if p.startswith("results/")]
    patterns = [_artifact_regex(a, "built") for a in layout.ARTIFACTS.values()]
    assert len(built) > 100
    assert [p for p in built if not any(r.match(p) for r in patterns)] == []
