"""kiln verify's comparisons without a build: first differing byte of a tree, value differences with
timings excluded and Apple's measurements set aside on Linux, and what a folder must hold."""

from __future__ import annotations

import json
import platform

import pytest

from kiln.distribution.verify import VerifyError, first_tree_difference, read_recorded, value_differences
from tests.helpers.workspaces import parse_dry_run


def _bundle(root, weights: bytes):
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "weight.bin").write_bytes(weights)
    (root / "model.mil").write_text("program(1.0)\n")
    return root


def test_first_tree_difference_names_the_file_and_byte(tmp_path):
    a = _bundle(tmp_path / "a.mlmodelc", bytes(range(200)))
    assert first_tree_difference(a, _bundle(tmp_path / "b.mlmodelc", bytes(range(200)))) is None
    flipped = bytearray(range(200))
    flipped[137] ^= 0xFF
    c = _bundle(tmp_path / "c.mlmodelc", bytes(flipped))
    assert first_tree_difference(a, c) == "weights/weight.bin: byte 137: recorded 0x89, rebuilt 0x76 (200 bytes)"
    d = _bundle(tmp_path / "d.mlmodelc", bytes(range(150)))
    assert first_tree_difference(a, d) == "weights/weight.bin: 200 bytes recorded, 150 rebuilt (equal up to there)"
    (d / "extra.bin").write_bytes(b"x")
    assert first_tree_difference(a, d) == "extra.bin: only in the rebuild"
    assert first_tree_difference(a, tmp_path / "none") == "the rebuild did not produce it"


def test_value_differences_name_timings_not_reproducible_and_name_the_path():
    recorded = {"parity": [{"output": "vad_output", "backend": "kiln_fp32", "max_abs": 0.001, "psnr_db": 70.0}],
                "latency": {"kiln_fp32": {"median_ms": 1.5}}, "seconds": {"export": 3.0},
                "toolchain": {"torch": "2.13.0"}}
    rebuilt = {"parity": [{"output": "vad_output", "backend": "kiln_fp32", "max_abs": 0.001, "psnr_db": 70.0}],
               "latency": {"kiln_fp32": {"median_ms": 9.9}}, "seconds": {"export": 1.0},
               "toolchain": {"torch": "2.12.0"}}
    # timings are named not reproducible (an edited latency is never passed over as reproduced); the
    # toolchain record is compared before the rebuild
    timings = [("not_reproducible", "latency: a measured timing (it differs between runs; not compared)"),
               ("not_reproducible", "seconds: a measured timing (it differs between runs; not compared)")]
    assert list(value_differences(recorded, rebuilt)) == timings
    rebuilt["parity"][0]["max_abs"] = 0.002
    assert list(value_differences(recorded, rebuilt)) == [
        timings[0], ("differing", "parity[0].max_abs: recorded 0.001, rebuilt 0.002"), timings[1]]
    rebuilt.update(latency=recorded["latency"], seconds=recorded["seconds"])
    assert list(value_differences(recorded, rebuilt)) == [
        ("differing", "parity[0].max_abs: recorded 0.001, rebuilt 0.002")]


@pytest.mark.skipif(platform.system() == "Darwin", reason="Apple's runtime exists here")
def test_values_measured_on_apples_runtime_are_not_reproducible_on_linux():
    row = {"output": "vad_output", "max_abs": 0.001}
    recorded = {"parity": [{**row, "backend": "kiln_fp32"}, {**row, "backend": "coreml_cpuAndNeuralEngine"}],
                "task_metrics": {"coreml_all": {"decision_agreement": 1.0}, "kiln_fp32": {"decision_agreement": 1.0}},
                "absent_backends": {"coreml_cpuAndGPU": "not measured"}}
    rebuilt = {"parity": [{**row, "backend": "kiln_fp32"}],
               "task_metrics": {"kiln_fp32": {"decision_agreement": 1.0}},
               "absent_backends": {"coreml_cpuAndGPU": "Apple's Core ML runtime exists only on macOS"}}
    assert list(value_differences(recorded, rebuilt)) == [
        ("not_reproducible", "parity: measured on Apple's runtime (coreml_cpuAndNeuralEngine)"),
        ("not_reproducible", "task_metrics.coreml_all: measured on Apple's runtime")]


def test_a_folder_without_the_recorded_lock_is_refused_naming_what_is_missing(tmp_path):
    (tmp_path / "pub" / "kiln").mkdir(parents=True)
    (tmp_path / "pub" / "kiln" / "provenance.json").write_text(json.dumps({}))
    (tmp_path / "pub" / "kiln" / "config.yaml").write_text("models: {}\n")
    with pytest.raises(VerifyError, match=r"pub: cannot verify: missing kiln/toolchain.lock, kiln/records/source.json"):
        read_recorded(tmp_path / "pub")
    with pytest.raises(VerifyError, match=r"cannot verify: missing kiln/provenance.json \(a published folder\) and "
                                          r"metadata.json \(a results folder\)"):
        read_recorded(tmp_path)


def test_a_workdir_is_new_empty_or_one_verify_made(tmp_path):
    from kiln.distribution.verify import WORKDIR_MARKER, prepare_workdir

    protect = {"the checkout": tmp_path / "checkout", "the folder verified": tmp_path / "pub"}
    new = prepare_workdir(tmp_path / "new" / "scratch", "m", protect=protect)
    assert (new / WORKDIR_MARKER).is_file()
    (new / "config.yaml").write_text("rebuilt\n")
    assert prepare_workdir(new, "m", protect=protect) == new            # verify made it: reused
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (prepare_workdir(empty, "m", protect=protect) / WORKDIR_MARKER).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    (mine / WORKDIR_MARKER).symlink_to(new / WORKDIR_MARKER)          # a linked marker is no marker
    with pytest.raises(VerifyError, match=r"it is not empty and kiln verify did not make it"):
        prepare_workdir(mine, "m", protect=protect)
    assert sorted(p.name for p in mine.iterdir()) == [WORKDIR_MARKER, "notes.txt"]
    (tmp_path / "link").symlink_to(new)
    with pytest.raises(VerifyError, match=r"it exists and is not a directory \(a symbolic link or a file\)"):
        prepare_workdir(tmp_path / "link", "m", protect=protect)


def test_equal_values_of_apple_keys_are_not_reported():
    recorded = {"compiled": {"apple_compiler_available": False, "compiler": "kiln"}}
    assert list(value_differences(recorded, json.loads(json.dumps(recorded)))) == []


def test_the_rebuild_plans_the_models_staging_and_nothing_else(tmp_path):
    """The rebuild's Snakemake command, dry-run in a copy of the workflow (every model of the default
    config enabled): it plans silero_vad's jobs and its staging only. Given as `--forcerun
    stage_silero_vad stage_silero_vad`, Snakemake read the target as a second rule to rerun, built its
    default target `all` (129 jobs, every enabled model) and only then staged (issue 27 round 2)."""
    from kiln.distribution.verify import rebuild_command
    from tests.helpers.workspaces import copy_workflow

    ws = copy_workflow(tmp_path / "ws")
    command = rebuild_command("silero_vad", 1)
    out = ws.run(command[0], "--dry-run", *command[1:])   # the command itself, as a dry run
    jobs = parse_dry_run(out.stdout)
    assert ("stage_silero_vad", {}) in jobs
    assert "all" not in {rule for rule, _ in jobs}
    assert {w.get("model") for _, w in jobs if w.get("model")} == {"silero_vad"}, sorted(jobs)


def test_check_of_a_published_folder_finds_its_artifacts_in_the_folder(tmp_path):
    """`kiln check publish/<model>` in a separate process, from inside a checkout whose results hold
    the build and from elsewhere: the artifacts provenance.json lists are found in the folder (before:
    its records' checkout paths were looked up in the current directory's results, so an intact
    download had '36 missing' from elsewhere and a tampered one 'matched' from inside the checkout).
    A flipped byte is named, a listed path leaving the folder and a link are named and not read."""
    from kiln.foundation.fsutil import sha256_tree
    from tests.clirun import kiln, snapshot

    folder = tmp_path / "publish" / "m"
    bundle = _bundle(folder / "m-v1.mlmodelc", bytes(range(200)))
    provenance = {"model": "m", "results_dir": "results", "names": {"unified": "m-v1"},
                  "kiln": {"git_commit": None, "checkout_commit": None},
                  "artifacts": [{"path": "m-v1.mlmodelc", "source": "m/unified.mlmodelc", "kind": "bundle",
                                 "component": "unified", "strategy": None, "sha256": sha256_tree(bundle)}]}
    (folder / "kiln").mkdir()
    (folder / "kiln" / "provenance.json").write_text(json.dumps(provenance))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (tmp_path, elsewhere):
        ok = kiln("check", str(folder), cwd=cwd)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == f"{folder}: 1/1 published artifacts match"
    data = bytearray((bundle / "weights" / "weight.bin").read_bytes())
    data[7] ^= 0xFF
    (bundle / "weights" / "weight.bin").write_bytes(bytes(data))
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    provenance["artifacts"].append({**provenance["artifacts"][0], "path": "../../secret.txt"})
    provenance["artifacts"].append({**provenance["artifacts"][0], "path": "leak.mlmodelc"})
    (folder / "kiln" / "provenance.json").write_text(json.dumps(provenance))
    (folder / "leak.mlmodelc").symlink_to(tmp_path / "elsewhere")
    def unchanged():   # kiln's digest cache (.kiln/cache in the current directory) aside
        return {k: v for k, v in snapshot(tmp_path).items() if ".kiln" not in k.split("/")}
    before = unchanged()
    bad = kiln("check", str(folder), cwd=elsewhere)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert lines[-1] == "kiln: error: IntegrityError: 3 artifact(s) do not match their job records (listed above)"
    assert f"{folder}/leak.mlmodelc (a symbolic link to {tmp_path / 'elsewhere'}): not read" in lines[0]
    assert lines[1].startswith(f"{bundle}: content does not match its record")
    assert lines[2].startswith("'../../secret.txt': a listed path leaving the folder (not read)")
    assert "Traceback" not in bad.stderr and unchanged() == before


def test_a_folder_reached_through_a_link_into_the_workdir_is_refused(tmp_path):
    """`kiln verify <link>/publish/m --workdir <workdir>` where <link> points at the workdir: the folder
    verified is the rebuild's own staging, which the rebuild replaces before comparing it with itself
    (before: every item 'reproduced', whatever the folder held). Refused in one line before anything
    runs, as the same folder named without the link is."""
    from tests.clirun import assert_one_line_error, kiln, snapshot

    workdir = tmp_path / "scratch"
    folder = workdir / "publish" / "m"
    (folder / "kiln").mkdir(parents=True)
    (workdir / ".kiln-verify").write_text(json.dumps({"made_by": "kiln verify", "model": "m"}))
    for name, text in (("provenance.json", json.dumps({"model": "m", "results_dir": "results", "names": {},
                                                        "kiln": {"git_commit": None, "checkout_commit": None},
                                                        "artifacts": []})),
                       ("config.yaml", "results_dir: results\nmodels: {}\n"), ("toolchain.lock", "numpy==0\n")):
        (folder / "kiln" / name).write_text(text)
    (folder / "kiln" / "records").mkdir()
    (folder / "kiln" / "records" / "source.json").write_text('{"files": []}')
    (tmp_path / "link").symlink_to(workdir)
    before = snapshot(tmp_path)
    for target in (folder, tmp_path / "link" / "publish" / "m"):
        result = kiln("verify", str(target), "--workdir", str(workdir), cwd=tmp_path, timeout=60)
        assert_one_line_error(result, "VerifyError", f"--workdir {workdir}: refusing to rebuild there: it holds the "
                                                     f"folder verified ({folder})")
    assert snapshot(tmp_path) == before
