"""What the Snakefile's start remembers by content (kiln.workflow.startup): Snakemake's config parse,
the same value as Snakemake's own loader, parsed again after any edit, never for values JSON cannot
carry; the settings-stamp sync, run again after any edit of what it reads; and, in separate
Snakemake processes, a start that reads config.yaml from the cache still sees edits and --config."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from snakemake.common import configfile as snakemake_configfile

from kiln.workflow import startup


@pytest.fixture()
def counted():
    calls = []

    def load(path):
        calls.append(str(path))
        return snakemake_configfile.load_configfile(path)

    return load, calls


def test_same_bytes_are_parsed_once_and_an_edit_is_parsed_again(tmp_path, counted):
    load, calls = counted
    cache = tmp_path / "cache.json"
    config = tmp_path / "config.yaml"
    config.write_text("results_dir: results\nmodels:\n  a: {family: plain, atol: 0.001, tags: [x, 'y'], flag: yes}\n")
    expected = snakemake_configfile.load_configfile(str(config))
    cached = startup.cached(load, cache)
    assert cached(str(config)) == expected and len(calls) == 1
    again = cached(str(config))
    assert again == expected and len(calls) == 1   # from the cache: not parsed
    assert json.dumps(again) == json.dumps(expected)   # same keys, order and types
    config.write_text(config.read_text().replace("0.001", "0.002"))
    assert cached(str(config))["models"]["a"]["atol"] == 0.002 and len(calls) == 2
    config.write_text(config.read_text().replace("0.002", "0.001"))   # an earlier text: still known
    assert cached(str(config)) == expected and len(calls) == 2


@pytest.mark.parametrize("text, check", [
    ("when: 2024-01-02\n", lambda v: v["when"] == datetime.date(2024, 1, 2)),   # a YAML date
    ("names: !!set {a: null}\n", lambda v: v["names"] == {"a"}),
    ('{"b": 1, "a": {"c": 2}}', lambda v: type(v).__name__ == "OrderedDict"),   # JSON: Snakemake's ordered dicts
    ("1: one\n", lambda v: v == {1: "one"}),   # a key JSON would turn into a string
    ("big: .inf\n", lambda v: v["big"] == float("inf")),
    ("__use_yte__: true\nvalue: ?1 + 1\n", lambda v: v["value"] == 2),   # a yte template: may differ per run
])
def test_values_json_cannot_carry_are_parsed_every_time(tmp_path, counted, text, check):
    load, calls = counted
    cache = tmp_path / "cache.json"
    config = tmp_path / "config.yaml"
    config.write_text(text)
    cached = startup.cached(load, cache)
    for _ in range(2):
        assert check(cached(str(config)))
    assert len(calls) == 2
    assert not cache.exists()


def test_a_damaged_or_unwritable_cache_only_costs_a_parse(tmp_path, counted):
    load, calls = counted
    config = tmp_path / "config.yaml"
    config.write_text("a: 1\n")
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{not json")
    assert startup.cached(load, damaged)(str(config)) == {"a": 1}
    assert startup.cached(load, damaged)(str(config)) == {"a": 1} and len(calls) == 1   # rewritten whole
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache's folder should be")
    for _ in range(2):
        assert startup.cached(load, blocked / "cache.json")(str(config)) == {"a": 1}
    assert len(calls) == 3


def test_a_missing_file_fails_as_with_snakemakes_loader(tmp_path, counted):
    load, calls = counted
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError):
        snakemake_configfile.load_configfile(missing)
    with pytest.raises(FileNotFoundError):
        startup.cached(load, tmp_path / "cache.json")(missing)
    assert calls == [missing]


def test_snakemakes_loader_is_restored_after_the_block(tmp_path):
    original = snakemake_configfile.load_configfile
    with startup.cached_loader(tmp_path / "cache.json"):
        assert snakemake_configfile.load_configfile is not original
    assert snakemake_configfile.load_configfile is original
    with pytest.raises(RuntimeError):
        with startup.cached_loader(tmp_path / "cache.json"):
            raise RuntimeError("a failing configfile: directive")
    assert snakemake_configfile.load_configfile is original


@pytest.fixture()
def stamp_setup(tmp_path, monkeypatch, kiln_config):
    """A checkout folder (cwd) and a copy of kiln's package folder for the key, and a count of syncs."""
    import shutil

    import kiln
    from kiln.workflow import stamps

    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    package = tmp_path / "kiln"
    shutil.copytree(kiln.__path__[0], package, ignore=shutil.ignore_patterns("__pycache__"))
    syncs = []
    real_sync = stamps.sync
    monkeypatch.setattr(stamps, "sync", lambda items: syncs.append(1) or real_sync(items))
    return kiln_config, package, syncs


def _sync(config, package):
    return startup.sync_stamps(config, cache=Path(".kiln/cache/settings_stamps.json"), package=package)


def test_the_stamp_sync_is_skipped_until_something_it_reads_changes(stamp_setup):
    import dataclasses
    import os

    from kiln.workflow import plan

    config, package, syncs = stamp_setup
    every = [str(s.path) for s in plan.stamps(config)]
    assert sorted(_sync(config, package)["created"]) == sorted(every) and len(syncs) == 1
    assert _sync(config, package) == {"changed": [], "created": [], "adopted": []} and len(syncs) == 1

    stamp = Path(every[0])
    content = stamp.read_text()
    stamp.write_text(content.replace("{", "{ "))   # edited by hand
    assert _sync(config, package)["changed"] == [str(stamp)] and stamp.read_text() == content
    stamp.unlink()                                 # deleted
    assert _sync(config, package)["created"] == [str(stamp)] and len(syncs) == 3
    info = os.stat(stamp)                          # rewritten with its size and mtime kept: the ctime moved
    stamp.write_text(content.replace('"', "'"))
    os.utime(stamp, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert _sync(config, package)["changed"] == [str(stamp)]
    assert _sync(config, package)["changed"] == [] and len(syncs) == 4

    raw = json.loads(json.dumps(config.raw))       # a config edit
    model = next(iter(raw["models"]))
    raw["models"][model]["source"]["edited"] = True
    assert _sync(dataclasses.replace(config, raw=raw), package) is not None and len(syncs) == 5
    (package / "config.py").write_text((package / "config.py").read_text() + "\n")   # a code edit
    _sync(config, package)
    Path("contracts").mkdir()                      # a consumer contract added
    (Path("contracts") / "x.yaml").write_text("{}\n")
    _sync(config, package)
    assert len(syncs) == 7
    assert _sync(config, package)["changed"] == [] and len(syncs) == 7


def test_a_re_recorded_feed_runs_the_stamp_sync_again(stamp_setup):
    """A plain model's recorded ``.npz`` feed: its stamp holds the file's sha256, so writing new
    recordings (same config, same code) must sync again and change the prepare stamp."""
    import numpy as np

    from kiln.config import build_config

    _, package, syncs = stamp_setup
    np.savez("rec.npz", mels=np.zeros((2, 1, 40, 50), np.float32))
    raw = {"results_dir": "results", "models": {"tiny": {
        "family": "plain", "task": "speaker_embedding", "source": {"kind": "path", "path": "tiny.pt"},
        "network": {"kind": "torchscript"},
        "components": {"encoder": {"inputs": {"mels": {"shape": [1, 40, 50], "dtype": "float32"}},
                                   "outputs": {"embedding": {"shape": [1, 64], "dtype": "float32"}},
                                   "feeds": {"mels": {"modality": "npz", "path": "rec.npz"}}}}}}}
    config = build_config(raw, str(Path("config.yaml").resolve()))
    assert _sync(config, package)["created"] and len(syncs) == 1
    assert _sync(config, package)["changed"] == [] and len(syncs) == 1
    np.savez("rec.npz", mels=np.ones((2, 1, 40, 50), np.float32))   # new recordings, same path
    assert "prepare" in " ".join(_sync(config, package)["changed"]) and len(syncs) == 2


def _outputs(ws, *args):
    out = ws.snakemake("-n", *args).stdout
    return [o for line in out.splitlines() if line.strip().startswith("output:")
            for o in line.split(":", 1)[1].strip().split(", ")]


@pytest.mark.slow
def test_a_cached_start_sees_config_edits_and_command_line_settings(workspace):
    """In Snakemake processes: the second start takes config.yaml from the cache and plans the same
    jobs; an edit is planned from the new text; ``--config`` still overrides the cached parse."""
    ws = workspace
    cache = ws.root / startup.CACHE_PATH
    first = sorted(map(repr, ws.planned_jobs("all")))
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 1 and "silero_vad" in next(iter(entries.values()))["models"]
    assert sorted(map(repr, ws.planned_jobs("all"))) == first and len(json.loads(cache.read_text())["entries"]) == 1

    ws.edit_config(lambda config: config["models"]["silero_vad_onnx"].update(enabled=True))
    models = {wc.get("model") for _, wc in ws.planned_jobs("all")}
    assert {"silero_vad", "silero_vad_onnx"} <= models
    assert len(json.loads(cache.read_text())["entries"]) == 2

    outputs = _outputs(ws, "all", "--config", "results_dir=elsewhere")
    assert outputs and all(Path(o).parts[0] == "elsewhere" for o in outputs if o.startswith(("results", "elsewhere")))
    assert any(o.startswith("elsewhere/silero_vad/") for o in outputs)
