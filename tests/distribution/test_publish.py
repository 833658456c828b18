"""Staging and uploading carry regular files only: a link or special file is refused by name."""

from __future__ import annotations

import os
import subprocess

import pytest

from kiln.distribution.publish import PublishError, upload_staged


def test_a_staged_folder_holding_a_link_is_never_uploaded(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "k", "GIT_AUTHOR_EMAIL": "k@example.invalid",
           "GIT_COMMITTER_NAME": "k", "GIT_COMMITTER_EMAIL": "k@example.invalid"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=checkout, check=True, env=env)
    folder = tmp_path / "publish" / "m"
    (folder / "kiln").mkdir(parents=True)
    (folder / "kiln" / "provenance.json").write_text("{}")
    host = tmp_path / "hostname"
    host.write_text("a host file\n")
    (folder / "plots").mkdir()
    (folder / "plots" / "leak.png").symlink_to(host)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # nothing listens: a request would fail
    with pytest.raises(PublishError) as err:
        upload_staged(folder, "kiln-test/m", checkout=checkout)
    assert str(err.value) == (f"{folder}: refusing to upload it: plots/leak.png (a symbolic link to {host}); kiln "
                              f"ships only the regular files its jobs wrote (remove these)")
    os.mkfifo(folder / "pipe")
    (folder / "plots" / "leak.png").unlink()
    with pytest.raises(PublishError, match=r"refusing to upload it: pipe \(not a regular file\)"):
        upload_staged(folder, "kiln-test/m", checkout=checkout)


def test_a_plot_belongs_to_the_component_whose_layout_path_or_record_names_it(tmp_path, kiln_config):
    """Which component a plot is of comes from the layout's templates and the records naming it,
    not from its name: with unified_256ms removed from the config, its parity plot and the family
    plot only its parity record names are left out, although `unified` prefixes both names."""
    import dataclasses
    import json

    from kiln.distribution.publish import component_of, plots_of

    model = kiln_config.models["silero_vad"]
    only_unified = dataclasses.replace(model, components={"unified": model.components["unified"]})
    folder = tmp_path / "silero_vad"
    (folder / "plots").mkdir(parents=True)
    (folder / "parity").mkdir()
    for name in ("unified_parity.png", "unified_256ms_parity.png", "unified_speech.png", "latency.png"):
        (folder / "plots" / name).write_bytes(b"png")
    (folder / "parity" / "unified.json").write_text(json.dumps({"plots": ["results/silero_vad/plots/unified_parity.png"]}))
    (folder / "parity" / "unified_256ms.json").write_text(json.dumps({"plots": [
        "results/silero_vad/plots/unified_256ms_parity.png", "results/silero_vad/plots/unified_speech.png"]}))
    (folder / "metadata.json").write_text(json.dumps({"plots": ["results/silero_vad/plots/unified_speech.png"]}))
    assert component_of("plots/unified_256ms_parity.png") == "unified_256ms"
    assert component_of("quantized/int8_per_channel/unified_256ms.json") == "unified_256ms"
    assert component_of("metadata.json") is None and component_of("plots/unified_speech.png") is None
    assert [p.name for p in plots_of(folder, only_unified)] == ["latency.png", "unified_parity.png"]
    assert [p.name for p in plots_of(folder, model)] == [
        "latency.png", "unified_256ms_parity.png", "unified_parity.png", "unified_speech.png"]
