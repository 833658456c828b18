"""The release a model is built from is the one its consumer loads: a Silero built from another
silero-vad release than FluidAudio's contract names stops at the fetch job (a separate Snakemake
process), naming the contract and both versions, and leaves no source record."""

from __future__ import annotations


def test_a_source_release_the_consumer_does_not_load_stops_the_fetch(workspace):
    def other_release(config):
        config["models"]["silero_vad"]["source"]["version"] = "6.2.3"
    workspace.edit_config(other_release)
    result = workspace.snakemake("--cores", "1", "results/silero_vad/source.json", check=False)
    assert result.returncode != 0
    log = (workspace.root / "logs" / "silero_vad" / "fetch.log").read_text()
    assert ("contracts/silero_vad.yaml: FluidAudio loads source release 6.0.0, but model 'silero_vad' is "
            "built from 6.2.3") in log
    assert not (workspace.root / "results" / "silero_vad" / "source.json").exists()

    def configured_release(config):
        config["models"]["silero_vad"]["source"]["version"] = "6.0.0"
    workspace.edit_config(configured_release)
    workspace.snakemake("--cores", "1", "results/silero_vad/source.json")
    record = (workspace.root / "results" / "silero_vad" / "source.json").read_text()
    assert '"id": "silero-vad==6.0.0"' in record
