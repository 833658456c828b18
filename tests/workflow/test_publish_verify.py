"""From build to users, end to end on Silero (its 256 ms component, which FluidAudio loads): the
contract rule passes, `kiln publish --dry-run` stages the repo folder under the consumer's names,
a real publish is refused without a token or from a dirty tree and uploads to a local Hub otherwise,
`kiln verify` rebuilds the folder in a scratch directory and finds every artifact reproduced, then
names the first differing byte of a tampered one. One build, shared by the module's tests."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.hubserver import FakeHub
from tests.workflow.conftest import REPO, VENV_BIN, Workspace, workflow_files

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


def test_verify_reproduces_every_artifact_then_names_the_first_differing_byte(built, staged, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("verify") / "scratch"
    report = scratch.parent / "report.json"
    out = kiln(built, "verify", str(staged), "--workdir", str(scratch), "--report", str(report))
    assert out.stdout.index("toolchain: as recorded") < out.stdout.index("rebuilding silero_vad")
    result = json.loads(report.read_text())
    assert result["counts"]["differing"] == 0 and result["reproduced"]
    statuses = {(i["kind"], i["name"]): i["status"] for i in result["items"]}
    name = json.loads((staged / "kiln/provenance.json").read_text())["names"]["unified_256ms"]
    for key in (("bundle", f"{name}.mlmodelc"), ("package", f"{name}.mlpackage"),
                ("bundle", f"quantized/int8_per_channel/{name}.mlmodelc"), ("source", "source checkpoint"),
                ("record", "parity/unified_256ms.json"), ("record", "quantized/int8_per_channel/unified_256ms.json")):
        assert statuses[key] == "reproduced", key

    weights = staged / f"{name}.mlmodelc/weights/weight.bin"
    data = bytearray(weights.read_bytes())
    offset = len(data) // 2
    data[offset] ^= 0xFF
    weights.write_bytes(bytes(data))
    parity = staged / "kiln/records/parity/unified_256ms.json"
    record = json.loads(parity.read_text())
    record["parity"][0]["max_abs"] *= 2
    parity.write_text(json.dumps(record))
    again = kiln(built, "verify", str(staged), "--workdir", str(scratch), check=False)
    assert again.returncode == 2
    assert (f"differing         bundle   {name}.mlmodelc: weights/weight.bin: byte {offset}: "
            f"recorded 0x{data[offset]:02x}, rebuilt 0x{data[offset] ^ 0xFF:02x}") in again.stdout
    assert "differing         record   parity/unified_256ms.json: parity[0].max_abs: recorded" in again.stdout
    assert "2 differing" in again.stdout


def test_verify_names_what_a_folder_without_the_lock_lacks(built, staged, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(staged / "kiln", copy / "kiln")
    (copy / "kiln/toolchain.lock").unlink()
    out = kiln(built, "verify", str(copy), check=False)
    assert out.returncode == 2
    assert f"{copy}: cannot verify: missing kiln/toolchain.lock" in out.stderr
