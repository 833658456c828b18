"""From build to users, end to end on Silero (its 256 ms component, which FluidAudio loads): the
contract rule passes, `kiln publish --dry-run` stages the repo folder under the consumer's names,
a real publish is refused without a token or from a dirty tree and uploads to a local Hub otherwise,
`kiln verify` rebuilds the folder in a scratch directory and finds every artifact reproduced, then
accounts for every file of a tampered copy (a changed byte or figure, a missing or extra file, a path
leaving the folder, a link) and refuses a workdir it did not make; staging refuses a contract file
name leaving its folder and a link under the results. One build and one rebuild, shared by the
module's tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hubserver import FakeHub
from tests.helpers.workspaces import REPO, VENV_BIN, Workspace, workflow_files

pytestmark = pytest.mark.slow

NAME = "silero-vad-unified-256ms-v6.0.0"   # the silero-vad release FluidAudio loads


def _trim(config):
    for name, model in config["models"].items():
        model["enabled"] = name == "silero_vad"
    silero = config["models"]["silero_vad"]
    silero["components"] = {"unified_256ms": silero["components"]["unified_256ms"]}
    silero["quantize"] = {"strategies": ["int8_per_channel"]}
    silero["validate"]["precisions"] = ["fp32"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("publish") / "kiln"
    for rel in workflow_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    ws = Workspace(root)
    ws.env.pop("HF_TOKEN", None)
    ws.edit_config(_trim)
    ws.git("init", "-q", "-b", "main")
    ws.git("add", "-A")
    ws.git("commit", "-q", "-m", "workspace")
    ws.snakemake("--cores", "2", "all_silero_vad")
    ws.dvc("commit", "-f")                      # the DVC lock a release carries
    ws.git("add", "dvc.lock")
    ws.git("commit", "-q", "-m", "built silero_vad")
    return ws


def kiln(ws: Workspace, *args: str, check: bool = True, env: dict | None = None):
    return ws.run(str(VENV_BIN / "kiln"), *args, check=check, env=env)


@pytest.fixture(scope="module")
def staged(built):
    out = kiln(built, "publish", "silero_vad", "--dry-run")
    assert "dry run: nothing uploaded" in out.stdout
    return built.root / "publish" / "silero_vad"


def _tree(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_build_meets_the_consumer_contract(built):
    report = json.loads((built.root / "results/silero_vad/contract.json").read_text())
    assert report["passed"] and report["consumer"] == "FluidAudio"
    assert report["published_names"]["unified_256ms"] == NAME
    bundle = report["components"]["unified_256ms"]["artifacts"]["unified_256ms.mlmodelc"]["features"]
    assert bundle["inputs"]["audio_input"] == {"shape": [1, 4160], "dtype": "float32"}
    assert bundle["outputs"]["vad_output"] == {"shape": [1, 1, 1], "dtype": "float32"}


def test_dry_run_stages_the_model_repo_under_the_consumers_names(built, staged):
    provenance = json.loads((staged / "kiln/provenance.json").read_text())
    name = provenance["names"]["unified_256ms"]
    results = built.root / "results/silero_vad"
    assert _tree(staged / f"{name}.mlmodelc") == _tree(results / "unified_256ms.mlmodelc")
    assert _tree(staged / f"{name}.mlpackage") == _tree(results / "unified_256ms.mlpackage")
    assert _tree(staged / f"quantized/int8_per_channel/{name}.mlmodelc") == \
        _tree(results / "quantized/int8_per_channel/unified_256ms.mlmodelc")
    for rel in ("metadata.json", "quantization_summary.json", "contract.json", "kiln/config.yaml",
                "kiln/records/source.json", "kiln/records/parity/unified_256ms.json", "plots/quantization/strategies.png"):
        assert (staged / rel).is_file(), rel
    # the shapes the packages were built with: config.yaml keeps only the knobs, the prepare job's
    # resolved contracts are staged with the records
    assert (staged / "kiln/records/prepared/contracts.json").read_bytes() == \
        (results / "prepared/contracts.json").read_bytes()
    assert (staged / "kiln/toolchain.lock").read_bytes() == (built.root / "constraints.txt").read_bytes()
    assert (staged / "kiln/dvc.lock").read_bytes() == (built.root / "dvc.lock").read_bytes()
    head = built.git("rev-parse", "HEAD").stdout.strip()
    assert provenance["kiln"]["checkout_commit"] == head and provenance["kiln"]["checkout_dirty"] is False
    card = (staged / "README.md").read_text()
    parity = json.loads((results / "parity/unified_256ms.json").read_text())["parity"][0]
    assert f"| unified_256ms | {parity['output']} | kiln_fp32 | {parity['max_abs']:.4g} |" in card
    assert "| int8_per_channel | unified_256ms |" in card and "![plots/latency.png](plots/latency.png)" in card
    assert head in card and f"`{name}.mlmodelc`" in card


def test_publish_is_refused_without_token_or_from_a_dirty_tree_then_uploads(built, staged):
    args = ("publish", "silero_vad", "--repo-id", "kiln-test/silero-vad")
    with FakeHub(token="hf_test") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
        refused = kiln(built, *args, check=False, env=env)
        assert refused.returncode == 2
        assert "refusing to publish: no Hugging Face token in the environment (set HF_TOKEN)" in refused.stderr
        readme = built.root / "README.md"
        original = readme.read_text()
        readme.write_text(original + "\nlocal edit\n")
        dirty = kiln(built, *args, check=False, env={**env, "HF_TOKEN": "hf_test"})
        assert dirty.returncode == 2
        assert "refusing to publish from a working tree with uncommitted changes (README.md)" in dirty.stderr
        readme.write_text(original)
        assert hub.requests == []                    # nothing reached the Hub
        done = kiln(built, *args, env={**env, "HF_TOKEN": "hf_test"})
        assert "uploaded to kiln-test/silero-vad" in done.stdout
        assert hub.repos["kiln-test/silero-vad"].files == _tree(staged)


@pytest.fixture(scope="module")
def verified(built, staged, tmp_path_factory):
    """The first verify of the staged folder: a rebuild in a new workdir, which the tampering cases
    reuse (a verify that finds nothing to rebuild takes seconds)."""
    scratch = tmp_path_factory.mktemp("verify") / "scratch"
    report = scratch.parent / "report.json"
    out = kiln(built, "verify", str(staged), "--workdir", str(scratch), "--report", str(report))
    return scratch, json.loads(report.read_text()), out


def _snapshot(*roots) -> dict:
    """Every path below ``roots`` with its bytes (links by target): what must not change."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if ".kiln" in path.relative_to(root).parts or ".snakemake" in path.relative_to(root).parts:
                continue   # the digest cache and Snakemake's own metadata (not published, not the folder)
            out[str(path)] = (os.readlink(path) if path.is_symlink() else
                              path.read_bytes() if path.is_file() else None)
    return out


def test_verify_accounts_for_every_file_of_the_folder(built, staged, verified):
    scratch, result, out = verified
    assert out.stdout.index("toolchain: as recorded") < out.stdout.index("rebuilding silero_vad")
    assert result["counts"]["differing"] == 0 and result["reproduced"]
    statuses = {i["name"]: (i["kind"], i["status"]) for i in result["items"]}
    reproduced = {i["name"] for i in result["items"] if i["status"] == "reproduced"}
    name = json.loads((staged / "kiln/provenance.json").read_text())["names"]["unified_256ms"]
    for key in (f"{name}.mlmodelc", f"{name}.mlpackage", f"quantized/int8_per_channel/{name}.mlmodelc",
                "README.md", "metadata.json", "kiln/provenance.json", "kiln/records/source.json",
                "kiln/records/prepared/contracts.json",
                "kiln/records/parity/unified_256ms.json", "plots/unified_256ms_parity.png"):
        assert key in reproduced, key
    # a record's measured timings are named, beside its reproduced values
    timings = [i for i in result["items"] if i["name"] == "metadata.json" and i["status"] == "not_reproducible"]
    assert timings and "a measured timing" in timings[0]["detail"]
    assert statuses["plots/latency.png"] == ("plot", "not_reproducible")
    # every file of the folder is named by an item (bundles and packages as one)
    covered = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    named = {n for n in statuses}
    assert all(any(rel == n or rel.startswith(n + "/") for n in named) for rel in covered)
    assert (scratch / ".kiln-verify").is_file()


def _tampered(staged, tmp_path, tamper):
    copy = tmp_path / "pub" / "silero_vad"
    shutil.copytree(staged, copy, symlinks=True)
    tamper(copy)
    return copy


def _bundle_name(folder) -> str:
    return json.loads((folder / "kiln/provenance.json").read_text())["names"]["unified_256ms"]


def _flip(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset


def _unlisted_flipped_bundle(folder):
    """Flip a byte of the float bundle and drop it from provenance.json's artifact list."""
    _flip(folder / f"{_bundle_name(folder)}.mlmodelc/weights/weight.bin")
    provenance = json.loads((folder / "kiln/provenance.json").read_text())
    provenance["artifacts"] = [a for a in provenance["artifacts"] if a["path"] != f"{_bundle_name(folder)}.mlmodelc"]
    (folder / "kiln/provenance.json").write_text(json.dumps(provenance))


def _extra_bundle(folder):
    extra = folder / "quantized/extra/extra.mlmodelc"
    shutil.copytree(folder / f"{_bundle_name(folder)}.mlmodelc", extra)
    _flip(extra / "weights/weight.bin")


def _card_figure(folder):
    card = folder / "README.md"
    text = card.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| unified_256ms | vad_output | kiln_fp32 |"))
    card.write_text(text.replace(row, row.replace("| kiln_fp32 | ", "| kiln_fp32 | 0.00001 (was ")))


def _metadata_figure(folder):
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["components"]["unified_256ms"]["parity"][0]["max_abs"] /= 100
    (folder / "metadata.json").write_text(json.dumps(metadata))


def _source_files_emptied(folder):
    source = json.loads((folder / "kiln/records/source.json").read_text())
    source["files"] = []
    (folder / "kiln/records/source.json").write_text(json.dumps(source))


def _artifact_path_escape(folder):
    provenance = json.loads((folder / "kiln/provenance.json").read_text())
    provenance["artifacts"][0]["path"] = "../../../../../../etc/hostname"
    (folder / "kiln/provenance.json").write_text(json.dumps(provenance))


def _bundle_in_hub_bookkeeping(folder):
    """huggingface_hub's own records of a download pass; a bundle hidden beside them does not."""
    (folder / ".cache/huggingface/download").mkdir(parents=True)
    (folder / ".cache/huggingface/.gitignore").write_text("*\n")
    (folder / ".cache/huggingface/download/README.md.metadata").write_text(f"{'0' * 40}\n{'1' * 40}\n1.0\n")
    shutil.copytree(folder / f"{_bundle_name(folder)}.mlmodelc", folder / ".cache/huggingface/evil.mlmodelc")


TAMPERING = {
    "flipped byte, bundle dropped from the list": (
        _unlisted_flipped_bundle, [r"differing +bundle +{name}\.mlmodelc: weights/weight\.bin: byte \d+: recorded",
                                   r"differing +record +kiln/provenance\.json: provenance\.artifacts"]),
    "extra unlisted bundle": (
        _extra_bundle, [r"differing +file +quantized/extra/extra\.mlmodelc/weights/weight\.bin: not produced by the "
                        r"rebuild"]),
    "figure edited in the card": (
        _card_figure, [r"differing +card +README\.md: differs from the card regenerated from the records \(line \d+"]),
    "card with CRLF line ends": (
        lambda f: (f / "README.md").write_bytes((f / "README.md").read_bytes().replace(b"\n", b"\r\n")),
        [r"differing +card +README\.md: differs from the card regenerated from the records \(its line ends are CRLF\)"]),
    "figure edited in metadata.json": (
        _metadata_figure, [r"differing +record +metadata\.json: components\.unified_256ms\.parity\[0\]\.max_abs: "
                           r"recorded"]),
    "parity record deleted": (
        lambda f: (f / "kiln/records/parity/unified_256ms.json").unlink(),
        [r"differing +file +kiln/records/parity/unified_256ms\.json: missing from the folder \(the rebuild stages it\)"]),
    "source file list emptied": (
        _source_files_emptied, [r"differing +record +kiln/records/source\.json: files: 0 entries recorded, 1 rebuilt"]),
    "bundle hidden in the Hub's bookkeeping": (
        _bundle_in_hub_bookkeeping, [r"differing +file +\.cache/huggingface/evil\.mlmodelc/weights/weight\.bin: not "
                                     r"produced by the rebuild",
                                     r"not_reproducible +file +\.cache: huggingface_hub's bookkeeping"]),
    "artifact path leaving the folder": (
        _artifact_path_escape, [r"differing +record +kiln/provenance\.json: provenance\.artifacts\[0\]\.path: "
                                r"recorded \"\.\./\.\./\.\./\.\./\.\./\.\./etc/hostname\""]),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_names_every_tampering(built, staged, verified, tmp_path, case):
    import re

    tamper, expected = TAMPERING[case]
    folder = _tampered(staged, tmp_path, tamper)
    scratch = verified[0]
    before = _snapshot(folder, built.root / "results", built.root / "publish")
    out = kiln(built, "verify", str(folder), "--workdir", str(scratch), "--report", str(tmp_path / "r.json"),
               check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    for pattern in expected:
        assert re.search(pattern.format(name=re.escape(_bundle_name(staged))), out.stdout), (pattern, out.stdout)
    assert out.stderr.strip().splitlines() == [f"kiln: error: VerifyError: {folder}: "
                                               f"{json.loads((tmp_path / 'r.json').read_text())['counts']['differing']} "
                                               f"item(s) differ from the rebuild (listed above)"]
    assert "hostname" not in " ".join(i["name"] for i in json.loads((tmp_path / "r.json").read_text())["items"])
    assert _snapshot(folder, built.root / "results", built.root / "publish") == before
    assert built.git("status", "--porcelain").stdout == ""


@pytest.mark.parametrize("link", ["kiln/config.yaml", "plots/leak.png"])
def test_verify_reads_nothing_through_a_link(built, staged, tmp_path, link):
    host = tmp_path / "host.txt"
    host.write_text("a host file\n")

    def tamper(folder):
        (folder / link).unlink(missing_ok=True)
        (folder / link).symlink_to(host)
    folder = _tampered(staged, tmp_path, tamper)
    scratch = tmp_path / "scratch"
    out = kiln(built, "verify", str(folder), "--workdir", str(scratch), check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"kiln: error: VerifyError: {folder}: cannot verify: {link} (a symbolic link to {host}); verify reads no file "
        f"through a link (a published folder holds regular files only)"]
    assert not scratch.exists() and out.stdout == ""


def test_verify_refuses_a_workdir_it_did_not_make(built, staged, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my settings\n")
    (mine / "Makefile").write_text("all:\n")
    before = _snapshot(mine, staged)
    for workdir, why in [(str(mine), "it is not empty and kiln verify did not make it"),
                         (".", "it is the checkout"),
                         (str(staged / "kiln"), "it lies inside the folder verified"),
                         (str(built.root / "publish"), "it holds the folder verified")]:
        out = kiln(built, "verify", str(staged), "--workdir", workdir, check=False)
        assert out.returncode == 2, (workdir, out.stdout)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"kiln: error: VerifyError: --workdir {workdir}: refusing "
                                                       f"to rebuild there: {why}"), (workdir, lines)
    assert _snapshot(mine, staged) == before
    assert built.git("status", "--porcelain").stdout == ""


def test_the_rebuild_is_stopped_at_its_time_limit(built, staged, tmp_path):
    import time

    scratch = tmp_path / "scratch"
    started = time.monotonic()
    out = kiln(built, "verify", str(staged), "--workdir", str(scratch), "--timeout", "3", check=False)
    assert out.returncode == 2
    assert (f"kiln: error: VerifyError: the rebuild of silero_vad in {scratch} took longer than 3 s (--timeout) and "
            f"was stopped (log: {scratch / 'verify-snakemake.log'})") in out.stderr
    assert time.monotonic() - started < 60
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(scratch)], capture_output=True, text=True).stdout.split()
    assert left == [], "rebuild processes outlived the time limit"
    # the stopped rebuild's Snakemake lock is released: verifying again in the same workdir rebuilds
    # (and is stopped again) instead of failing with Snakemake's LockException
    again = kiln(built, "verify", str(staged), "--workdir", str(scratch), "--timeout", "3", check=False)
    assert again.returncode == 2 and "LockException" not in again.stderr
    assert again.stderr.strip().splitlines() == [
        f"kiln: error: VerifyError: the rebuild of silero_vad in {scratch} took longer than 3 s (--timeout) and was "
        f"stopped (log: {scratch / 'verify-snakemake.log'})"]


def _running_in(folder) -> list[str]:
    """The processes whose working directory lies in ``folder`` (a rebuild's Snakemake and its jobs)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if proc.name.isdigit() and (cwd == str(folder) or cwd.startswith(f"{folder}/")):
            found.append(proc.name)
    return found


def test_a_rebuild_ends_with_verify_killed_outright(built, staged, tmp_path):
    """kill -9 of `kiln verify` during its rebuild: the rebuild's Snakemake (in its own session) is
    told to stop by Linux's parent-death signal, stops its jobs and releases the workdir's lock (before:
    it ran on with no time limit, and verifying again there failed on its lock until it ended)."""
    import signal
    import time

    scratch = tmp_path / "scratch"
    log = scratch / "verify-snakemake.log"
    verify = subprocess.Popen([str(VENV_BIN / "kiln"), "verify", str(staged), "--workdir", str(scratch)],
                              cwd=built.root, env=built.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "rule " in log.read_text(errors="replace")):
        time.sleep(0.2)
    assert verify.poll() is None and _running_in(scratch), "no rebuild was running: the test would prove nothing"
    verify.send_signal(signal.SIGKILL)
    verify.wait()
    deadline = time.monotonic() + 90
    while _running_in(scratch) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running_in(scratch) == [], "the rebuild outlived verify"
    again = kiln(built, "verify", str(staged), "--workdir", str(scratch), "--timeout", "3", check=False)
    assert again.stderr.strip().splitlines() == [
        f"kiln: error: VerifyError: the rebuild of silero_vad in {scratch} took longer than 3 s (--timeout) and was "
        f"stopped (log: {log})"]


def test_verify_names_what_a_folder_without_the_lock_lacks(built, staged, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(staged / "kiln", copy / "kiln")
    (copy / "kiln/toolchain.lock").unlink()
    out = kiln(built, "verify", str(copy), check=False)
    assert out.returncode == 2
    assert f"{copy}: cannot verify: missing kiln/toolchain.lock" in out.stderr


# -- staging ships only what was built ---------------------------------------------------------------

def test_a_contract_file_name_leaving_the_folder_is_refused(built, tmp_path):
    contract = built.root / "contracts/silero_vad.yaml"
    original = contract.read_text()
    out_dir = tmp_path / "a" / "b" / "c" / "stage"
    try:
        contract.write_text(original.replace('file: "silero-vad-unified-256ms-v{source_version}"', 'file: "../../../../x"'))
        before = _snapshot(tmp_path, built.root / "results")
        out = kiln(built, "publish", "silero_vad", "--dry-run", "--out", str(out_dir), check=False)
    finally:
        contract.write_text(original)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "kiln: error: ContractSchemaError: contracts/silero_vad.yaml: at 'components.unified_256ms.file': "
        "'../../../../x' is not a plain file name (has the part '..'); published files stay inside the model repo"]
    assert _snapshot(tmp_path, built.root / "results") == before
    assert not list(tmp_path.rglob("x.ml*")) and not list(built.root.parent.rglob("x.ml*"))


def test_a_link_under_the_results_is_refused_by_name_never_staged(built, tmp_path):
    host = tmp_path / "hostname"
    host.write_text("a host file\n")
    leak = built.root / "results/silero_vad/plots/leak.png"
    out_dir = tmp_path / "stage"
    leak.symlink_to(host)
    try:
        out = kiln(built, "publish", "silero_vad", "--dry-run", "--out", str(out_dir), check=False)
    finally:
        leak.unlink()
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"kiln: error: PublishError: results/silero_vad: refusing to stage it: plots/leak.png (a symbolic link to "
        f"{host}); kiln ships only the regular files its jobs wrote (remove these)"]
    assert not out_dir.exists() and not list(tmp_path.glob(".stage.*"))


def test_staging_ships_only_what_a_job_wrote(built, staged, tmp_path):
    """Regular files under results/silero_vad that no job wrote (a stray plot, a hard link to a host
    file named like a plot, a stray record at the top and among the parity records) are not staged:
    `kiln publish --dry-run` ships the same files as before they were there (before: each was copied
    into the folder, the records under kiln/records/)."""
    host = tmp_path / "secret.txt"
    host.write_text("a host file\n")
    results = built.root / "results/silero_vad"
    strays = {results / "plots/extra.png": None, results / "plots/hard.png": host, results / "stray.json": None,
              results / "parity/other.json": None}
    out_dir = tmp_path / "stage"
    try:
        for path, target in strays.items():
            if target is None:
                path.write_text("{}\n")
            else:
                os.link(target, path)
        kiln(built, "publish", "silero_vad", "--dry-run", "--out", str(out_dir))
    finally:
        for path in strays:
            path.unlink(missing_ok=True)
    assert sorted(_tree(out_dir)) == sorted(_tree(staged))
    assert not [p for p in out_dir.rglob("*") if p.name in ("extra.png", "hard.png", "stray.json", "other.json")]
    assert host.read_text() == "a host file\n"
