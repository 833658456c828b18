"""Staleness follows content, in separate Snakemake processes as a user runs them: a byte-identical
rewrite or a reverted setting plans nothing; real edits to settings, outputs and code plan exactly
the jobs downstream of them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.workspaces import FAMILY_TARGETS

pytestmark = pytest.mark.slow

AGGREGATES = {"all", "all_parakeet_tdt_v3_tiny", "all_kokoro_tiny"}
DOWNSTREAM_OF_PACKAGE = {("compile", "unified"), ("parity", "unified"), ("quantize", "unified"),
                         ("end_to_end", None), ("metadata", None), ("quantization_summary", None),
                         ("contract", None),
                         ("quantization_plot", "unified"), ("quantization_plot", "unified_256ms")}


def _work(jobs, model: str | None = None) -> set:
    return {(rule, wc.get("component")) for rule, wc in jobs
            if rule not in AGGREGATES and (model is None or wc.get("model") == model)}


def test_identical_rewrites_and_reverted_settings_plan_nothing(built_silero_workspace):
    ws = built_silero_workspace   # `snakemake --cores 2 all` done (the run's one build of it, copied here)
    package = ws.root / "results/silero_vad/unified.mlpackage"   # a real package
    assert (package / "Manifest.json").is_file()
    assert ws.planned_jobs() == []

    # (a) coremltools rewrites Manifest.json (same bytes) when it opens a package
    manifest_before = (package / "Manifest.json").stat().st_mtime_ns
    ws.run(sys.executable, "-c",
           "import sys, coremltools as ct; ct.models.MLModel(sys.argv[1], skip_model_load=True)", str(package))
    assert (package / "Manifest.json").stat().st_mtime_ns != manifest_before  # the rewrite happened
    assert ws.planned_jobs() == []

    # (b) a setting edited, then reverted
    config = (ws.root / "config.yaml").read_text()
    ws.edit_config(lambda c: c["models"]["silero_vad"]["components"]["unified"].update(
        {"export": {"compute_precision": "float32"}}))
    assert _work(ws.planned_jobs()) == DOWNSTREAM_OF_PACKAGE | {("export", "unified")}
    (ws.root / "config.yaml").write_text(config)
    assert ws.planned_jobs() == []

    # (c) a real edit of an output plans what reads it, not what made it
    with open(package / "Data/com.apple.CoreML/weights/weight.bin", "ab") as handle:
        handle.write(b"\0")
    assert _work(ws.planned_jobs()) == DOWNSTREAM_OF_PACKAGE


def test_code_edits_plan_exactly_the_jobs_that_run_the_code(fake_built_families):
    ws = fake_built_families   # every job of FAMILY_TARGETS marked done (fake_build), copied here
    targets = ("all", "all_parakeet_tdt_v3_tiny")
    assert ws.planned_jobs(*targets) == []

    # the Parakeet frontend: Parakeet's exports and everything downstream of them, nothing of Silero
    frontend = ws.root / "src/kiln/models/_nemo.py"
    original = frontend.read_text()
    frontend.write_text(original + "\n# edited\n")
    jobs = ws.planned_jobs(*targets)
    parakeet = {c for c in ("preprocessor", "encoder", "mel_encoder", "decoder", "joint", "joint_decision",
                            "joint_decision_single_step")}
    assert {wc["model"] for _, wc in jobs if "model" in wc} == {"parakeet_tdt_v3_tiny"}
    assert {c for r, c in _work(jobs) if r == "export"} == parakeet
    assert {c for r, c in _work(jobs) if r == "compile"} == parakeet
    # the random checkpoint is rebuilt (the frontend module also holds its reproducible saver) and
    # the prepare job re-traces (the only job that runs the frontend on the checkpoint); what is
    # downstream is planned because a dry run cannot know the new bytes will equal the old
    assert {r for r, _ in _work(jobs)} == {"fetch", "prepare_parakeet_tdt_v3_tiny", "reference_parakeet_tdt_v3_tiny",
                                           "export", "compile", "parity", "quantize", "end_to_end", "metadata",
                                           "quantization_summary", "contract", "quantization_plot"}

    # reverted, the frontend gets its recorded mtime back: nothing to do again
    frontend.write_text(original)
    assert ws.planned_jobs(*targets) == []

    # validation code: parity and quantize (and their aggregates) of every model, no export, no compile
    with open(ws.root / "src/kiln/validate/metrics.py", "a") as handle:
        handle.write("\n# edited\n")
    rules = {r for r, _ in _work(ws.planned_jobs(*targets))}
    assert rules == {"parity", "quantize", "end_to_end", "metadata", "quantization_summary", "quantization_plot"}


#: the jobs that build a network (fetch, prepare, export, compile, quantize), by rule name
BUILDING = ("fetch", "prepare_", "export", "compile", "quantize")


def _building(jobs) -> list:
    return sorted((r, c) for r, c in _work(jobs) if r.startswith(BUILDING) and r != "quantization_summary"
                  and r != "quantization_plot")


def _edited(ws, rel: str):
    """Append a line to a source file, plan, restore; the (rule, component) pairs planned."""
    path = ws.root / rel
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        return ws.planned_jobs(*FAMILY_TARGETS)
    finally:
        path.write_text(original)


def test_an_edit_rebuilds_only_the_family_part_it_touches(fake_built_families):
    """A family is a package of parts (kiln.family.PARTS): an edit to its judging code plans no job that
    builds a network, an edit to its build part plans no fetch, an edit to a shared validation module
    plans no export -- in separate Snakemake processes, on a workspace whose every job is done."""
    ws = fake_built_families   # every job of FAMILY_TARGETS marked done (fake_build), copied here
    assert ws.planned_jobs(*FAMILY_TARGETS) == []
    counts = {}

    # judging code (metrics, plots, the task's comparisons): parity and the summaries, nothing that
    # builds a network and no reference (the validation inputs are unchanged)
    for family, model in (("silero_vad", "silero_vad"), ("parakeet_tdt", "parakeet_tdt_v3_tiny"),
                          ("kokoro", "kokoro_tiny")):
        jobs = _edited(ws, f"src/kiln/models/{family}/judge.py")
        assert {wc.get("model") for _, wc in jobs} - {None} == {model}, family
        assert _building(jobs) == [], (family, _building(jobs))
        rules = {r for r, _ in _work(jobs)}
        assert rules >= {"parity", "end_to_end", "quantization_summary"} and f"reference_{model}" not in rules, rules
        counts[f"{family}/judge.py"] = len(_work(jobs))

    # the validation inputs (the feeds part): the reference job and what reads it, no fetch, prepare or export
    jobs = _edited(ws, "src/kiln/models/silero_vad/feeds.py")
    rules = {r for r, _ in _work(jobs)}
    assert "reference_silero_vad" in rules and not rules & {"fetch", "prepare_silero_vad", "export"}, rules
    counts["silero_vad/feeds.py"] = len(_work(jobs))

    # a wrapper (the build part): prepare and what is downstream, never the random checkpoint
    for rel, model in (("src/kiln/models/parakeet_tdt/build.py", "parakeet_tdt_v3_tiny"),
                       ("src/kiln/models/kokoro/net.py", "kokoro_tiny"),
                       ("src/kiln/models/silero_vad/build.py", "silero_vad")):
        jobs = _edited(ws, rel)
        rules = {r for r, _ in _work(jobs)}
        assert f"prepare_{model}" in rules and "fetch" not in rules, (rel, rules)
        counts[rel.removeprefix("src/kiln/models/")] = len(_work(jobs))

    # the random checkpoint's builder: the fetch job of that model (and what follows from it)
    rules = {r for r, wc in _work(_edited(ws, "src/kiln/models/kokoro/checkpoint.py"), "kokoro_tiny")}
    assert "fetch" in rules

    # shared validation modules: never an export, a compile or a random checkpoint
    jobs = _edited(ws, "src/kiln/validate/metrics.py")
    rules = {r for r, _ in _work(jobs)}
    assert not rules & {"fetch", "export", "compile"} and not any(r.startswith("prepare_") for r in rules), rules
    counts["validate/metrics.py"] = len(_work(jobs))
    # the audio measures: Kokoro's prepare job measures its traced programs against kokoro's own
    # forward with them (faithfulness), so Kokoro re-traces; no other model's network, no checkpoint
    jobs = _edited(ws, "src/kiln/validate/audio.py")
    building = {(r, wc.get("model", r.removeprefix("prepare_"))) for r, wc in jobs
                if r.startswith(BUILDING) and "quantization" not in r}
    assert {m for _, m in building} == {"kokoro_tiny"} and ("fetch", "kokoro_tiny") not in building, building
    counts["validate/audio.py"] = len(_work(jobs))
    print("planned jobs per edit:", counts)
    assert ws.planned_jobs(*FAMILY_TARGETS) == []


def test_code_is_judged_by_content_and_a_noop_start_stays_light(fake_built_families):
    """Jobs depend on their stage's code stamp (the sha256 of every module the stage runs), not on
    the files' mtimes: a source file rewritten with the same bytes plans nothing, as does a checkout
    that never had the stamps (they take the newest listed file's mtime); and a no-op `snakemake -n`
    does not import pandas (every param is derived from the outputs, so Snakemake serializes none)."""
    import os
    import shutil
    import time

    ws = fake_built_families   # every job of FAMILY_TARGETS (`all` among them) marked done, copied here
    assert ws.planned_jobs("all") == []
    stamp = ws.root / ".kiln/stamps/code/prepare-silero_vad.json"
    listed = __import__("json").loads(stamp.read_text())["files"]
    assert "src/kiln/models/silero_vad/build.py" in listed and len(listed) > 10

    # (a) every source file touched (same bytes, new mtime): nothing to do, the stamps keep their mtime
    stamp_mtime = stamp.stat().st_mtime_ns
    now = time.time() + 5
    for path in (ws.root / "src/kiln").rglob("*.py"):
        os.utime(path, (now, now))
    assert ws.planned_jobs("all") == []
    assert stamp.stat().st_mtime_ns == stamp_mtime

    # (b) a checkout without code stamps (made before they existed): adopted, nothing to do
    shutil.rmtree(ws.root / ".kiln/stamps/code")
    assert ws.planned_jobs("all") == []
    assert stamp.is_file()

    # (c) a real edit still plans the jobs that run the file (content changed: the stamp is rewritten)
    with open(ws.root / "src/kiln/models/silero_vad/build.py", "a") as handle:
        handle.write("\n# edited\n")
    rules = {r for r, _ in ws.planned_jobs("all")}
    assert {"prepare_silero_vad", "reference_silero_vad", "parity"} <= rules

    # (d) a no-op start imports no pandas (-X importtime lists every module a process imports)
    (ws.root / "src/kiln/models/silero_vad/build.py").write_text(
        (ws.root / "src/kiln/models/silero_vad/build.py").read_text().removesuffix("\n# edited\n"))
    assert ws.planned_jobs("all") == []
    result = ws.run(sys.executable, "-X", "importtime", str(Path(sys.executable).parent / "snakemake"), "-n", "all")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "snakemake.dag" in imported and "pandas" not in imported
    # nor the schema validator: the config's verdict is remembered by content (.kiln/cache/config_checks.json)
    assert "kiln.config" in imported and "jsonschema" not in imported
