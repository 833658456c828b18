"""The Hub both ways against a local stand-in (tests/hubserver.py): kiln's own download and upload code
runs in a subprocess with HF_ENDPOINT pointing at it, as it runs for users."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from kiln.distribution.publish import refusal
from tests.conftest import REPO
from tests.hubserver import FakeHub

FETCH = """
import json, sys
from pathlib import Path
from kiln.foundation.errors import KilnError
from kiln.sources import fetch
try:
    record = fetch("m", "kokoro", json.loads(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(record.as_dict()))
except KilnError as exc:
    print("ERROR", exc)
"""


def _env(hub: FakeHub, **extra) -> dict:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("HF_TOKEN", None)
    return {**env, **extra}


def _fetch(hub: FakeHub, spec: dict, workdir) -> dict | str:
    out = subprocess.run([sys.executable, "-c", FETCH, json.dumps(spec), str(workdir)], env=_env(hub),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    return line if line.startswith("ERROR") else json.loads(line)


@pytest.fixture()
def hub_repo():
    weights = os.urandom(200_000)                 # an LFS file (sha256 etag)
    config = b'{"n_token": 178, "style_dim": 128}'  # a regular git file (blob sha1 etag)
    voice = os.urandom(30_000)
    with FakeHub() as hub:
        commit = hub.commit("hexgrad/tiny", {"kokoro.pth": weights, "config.json": config, "voices/af.pt": voice})
        spec = {"kind": "hf", "repo_id": "hexgrad/tiny", "revision": commit, "filename": "kokoro.pth",
                "sha256": hashlib.sha256(weights).hexdigest(), "files": {"config": "config.json", "voice": "voices/af.pt"}}
        yield hub, spec, {"checkpoint": weights, "config": config, "voice": voice}


def test_hf_source_downloads_every_file_at_the_pinned_commit_and_records_sha256(hub_repo, tmp_path):
    hub, spec, content = hub_repo
    record = _fetch(hub, spec, tmp_path / "ckpt")
    assert record["kind"] == "hf" and record["revision"] == spec["revision"]
    files = {f["role"]: f for f in record["files"]}
    for role, data in content.items():
        assert open(files[role]["path"], "rb").read() == data
        assert files[role]["sha256"] == hashlib.sha256(data).hexdigest() and files[role]["size"] == len(data)
        assert record["details"]["hub"][role]["commit"] == spec["revision"]
    assert files["voice"]["path"].endswith("ckpt/voices/af.pt")
    # a second fetch checks the files on disk against the Hub's etags and downloads nothing
    hub.requests.clear()
    again = _fetch(hub, spec, tmp_path / "ckpt")
    assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in record["files"]]
    assert not [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert {r["downloaded"] for r in again["details"]["hub"].values()} == {False}


def test_hf_download_resumes_a_partial_file_with_a_range_request(hub_repo, tmp_path):
    hub, spec, content = hub_repo
    weights = content["checkpoint"]
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    etag = hashlib.sha256(weights).hexdigest()
    (ckpt / f"kokoro.pth.{etag[:16]}.incomplete").write_bytes(weights[:123_456])   # what a killed run leaves
    hub.cut_after["voices/af.pt"] = 10_000   # and a connection dropped mid-file
    record = _fetch(hub, spec, ckpt)
    assert record["details"]["hub"]["checkpoint"]["resumed_from_bytes"] == 123_456
    assert hub.gets("/kokoro.pth") == [{"Range": "bytes=123456-"}]
    assert (ckpt / "kokoro.pth").read_bytes() == weights and (ckpt / "voices" / "af.pt").read_bytes() == content["voice"]
    assert not list(ckpt.rglob("*.incomplete"))


def test_hf_download_refuses_a_moving_revision_and_names_a_missing_file(hub_repo, tmp_path):
    hub, spec, _ = hub_repo
    moved = _fetch(hub, {**spec, "revision": "main"}, tmp_path / "a")
    assert moved.startswith("ERROR") and f"resolved the pinned revision to commit {spec['revision']}" in moved
    missing = _fetch(hub, {**spec, "files": {"voice": "voices/none.pt"}}, tmp_path / "b")
    assert missing.startswith("ERROR cannot reach hexgrad/tiny/voices/none.pt @") and "EntryNotFound" in missing
    wrong = _fetch(hub, {**spec, "sha256": "0" * 64}, tmp_path / "c")
    assert wrong.startswith("ERROR") and "does not match the configured source.sha256" in wrong


UPLOAD = """
import sys
from kiln.sources.hub import upload
print(upload(sys.argv[1], sys.argv[2], token=sys.argv[3], message="kiln test")["commit"])
"""


def test_upload_creates_the_repo_and_commits_every_file(tmp_path):
    folder = tmp_path / "repo"
    (folder / "m.mlmodelc" / "weights").mkdir(parents=True)
    files = {"README.md": b"---\nlibrary_name: coreml\ntags:\n- kiln\n---\n# card\n", "m.mlmodelc/weights/weight.bin": os.urandom(50_000),
             "m.mlmodelc/model.mil": b"program(1.0)\n", "kiln/provenance.json": b"{}\n"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    with FakeHub(token="hf_secret") as hub:
        out = subprocess.run([sys.executable, "-c", UPLOAD, str(folder), "kiln-test/silero", "hf_secret"],
                             env=_env(hub), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        repo = hub.repos["kiln-test/silero"]
        assert repo.commits[-1] == out.stdout.split()[-1]
        assert repo.files == files
        assert hub.card_metadata and all(m == {"library_name": "coreml", "tags": ["kiln"]} for m in hub.card_metadata)
        methods = [(m, p) for m, p, _ in hub.requests]
        assert ("PUT", f"/lfs-upload/{hashlib.sha256(files['m.mlmodelc/weights/weight.bin']).hexdigest()}") in methods
        assert all(h.get("Authorization") == "Bearer hf_secret" for m, _, h in hub.requests if m == "POST")


def test_publishing_is_refused_without_a_token_or_from_a_dirty_tree():
    clean = {"commit": "a" * 40, "dirty": False, "changes": []}
    assert refusal(token="hf_x", state=clean) is None
    assert refusal(token=None, state=clean) == (
        "refusing to publish: no Hugging Face token in the environment (set HF_TOKEN); "
        "--dry-run stages the folder without one")
    dirty = {"commit": "a" * 40, "dirty": True, "changes": ["config.yaml", "contracts/kokoro.yaml"]}
    assert refusal(token="hf_x", state=dirty).startswith(
        "refusing to publish from a working tree with uncommitted changes (config.yaml, contracts/kokoro.yaml)")


# --- a hostile or broken Hub, through the workflow's fetch job (issue 27, item 6) ---------------------

JIT = os.urandom(50_000)   # what the fake Hub serves as silero_vad.jit (an LFS file: sha256 ETag)


@pytest.fixture(scope="module")
def hub_workspace(tmp_path_factory):
    """A workflow checkout whose silero_vad comes from a local fake Hub; the other models disabled."""
    from tests.helpers.workspaces import copy_workflow

    with FakeHub() as hub:
        commit = hub.commit("kiln-test/silero", {"silero_vad.jit": JIT, "config.json": b"{}"})
        ws = copy_workflow(tmp_path_factory.mktemp("hubws") / "kiln")
        ws.env.update({"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        ws.env.pop("HF_TOKEN", None)
        yield ws, hub, commit


def _hf_source(commit, **extra) -> dict:
    # the fake repo stands in for the release FluidAudio's contract names (contracts/silero_vad.yaml)
    return {"kind": "hf", "repo_id": "kiln-test/silero", "revision": commit, "filename": "silero_vad.jit",
            "version": "6.0.0", **extra}


def _use_source(ws, source) -> None:
    def edit(config):
        for name, model in config["models"].items():
            model["enabled"] = name == "silero_vad"
        config["models"]["silero_vad"]["source"] = source
    ws.edit_config(edit)


FETCH_CASES = {
    # name: (fake Hub setup, extra source keys, words of the job's one error line)
    "etag-holding-a-slash": (lambda hub: hub.etags.__setitem__("silero_vad.jit", '"ab/../../../../etc/x"'), {},
                             ["the Hub's ETag 'ab/../../../../etc/x' is neither a sha256 nor a git blob sha1"]),
    "server-drops-every-download": (lambda hub: hub.drop.update({"GET"}), {},
                                    ["download of kiln-test/silero/silero_vad.jit", "stopped after 0 bytes",
                                     "RemoteProtocolError", "nothing was kept"]),
    "server-drops-every-connection": (lambda hub: hub.drop.update({"GET", "HEAD"}), {},
                                      ["cannot reach kiln-test/silero/silero_vad.jit", "RemoteProtocolError"]),
    "side-file-named-dotdot": (lambda hub: None, {"files": {"config": ".."}},
                               ["Hub file name '..' must be a relative path inside the repo"]),
}


@pytest.mark.parametrize("case", sorted(FETCH_CASES))
def test_a_hostile_hub_fails_the_fetch_job_in_one_line_leaving_nothing(hub_workspace, case):
    """`snakemake results/silero_vad/source.json` against a Hub that answers a path-like ETag, drops
    every connection, or a side file named `..`: the fetch job logs one error line naming the file
    and the value (before: ValueError and httpx tracebacks), and leaves no `.incomplete` file, no
    record and no directory of its own behind."""

    ws, hub, commit = hub_workspace
    setup, extra, words = FETCH_CASES[case]
    _use_source(ws, _hf_source(commit, **extra))
    hub.drop.clear()
    hub.etags.clear()
    setup(hub)
    try:
        result = ws.snakemake("--cores", "1", "results/silero_vad/source.json", check=False)
    finally:
        hub.drop.clear()
        hub.etags.clear()
    assert result.returncode != 0
    log = (ws.root / "logs/silero_vad/fetch.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in log, log
    assert "SourceError: " in errors[0] and all(word in errors[0] for word in words), errors[0]
    # Snakemake makes the output's folder; the job leaves nothing in it: no record, no checkpoint
    # folder, no partial download (the refused side file is checked before anything is fetched)
    assert not list((ws.root / "results/silero_vad").rglob("*"))
    assert not list(ws.root.rglob("*.incomplete"))


def test_a_side_file_role_named_dotdot_is_refused_by_check_config(hub_workspace):
    from tests.clirun import assert_one_line_error, kiln

    ws, _, commit = hub_workspace
    _use_source(ws, _hf_source(commit, files={"..": "config.json"}))
    result = kiln("check-config", cwd=ws.root, timeout=60)
    assert_one_line_error(result, "ConfigError", "config.yaml: at 'models.silero_vad.source", "'..'")


def test_the_fetch_job_downloads_from_the_hub_under_the_models_memory_limit(hub_workspace):
    ws, _, commit = hub_workspace
    _use_source(ws, _hf_source(commit))
    ws.snakemake("--cores", "1", "results/silero_vad/source.json")
    record = json.loads((ws.root / "results/silero_vad/source.json").read_text())
    assert record["files"][0]["sha256"] == hashlib.sha256(JIT).hexdigest()
    from kiln.config import load_config

    reserved = load_config(ws.root / "config.yaml").model("silero_vad").mem_mb   # the model's, not a fixed 2000
    log = (ws.root / "logs/silero_vad/fetch.log").read_text()
    assert f"memory limit: {reserved} MB (address space)" in log, log
    (ws.root / "results/silero_vad/source.json").unlink()
