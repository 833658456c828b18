"""config.yaml is validated against its schema; every error names the key."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from kiln.config import build_config, export_settings, load_config, settings_digest
from kiln.foundation.errors import ConfigError


@pytest.fixture()
def raw(repo):
    return yaml.safe_load((repo / "config.yaml").read_text())


def test_repository_config_is_valid(repo):
    config = load_config(repo / "config.yaml")
    vad = config.model("silero_vad")
    assert set(vad.components) == {"unified", "unified_256ms"}
    # a family entry states only its knobs: its shapes come from the resolved contract it is bound to
    assert vad.components["unified"].inputs == () and vad.components["unified"].options == {"steps": 1}
    from tests.conftest import bind_resolved

    vad = bind_resolved(config).model("silero_vad")
    unified = vad.components["unified"]
    assert [t.name for t in unified.inputs] == ["audio_input", "hidden_state", "cell_state"]
    assert unified.inputs[0].shape == (1, 576)
    assert vad.components["unified_256ms"].inputs[0].shape == (1, 4160)
    assert unified.export.deployment_target == "iOS17"
    assert unified.export.compute_units == "CPU_ONLY"


def _error(raw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    return info.value


def test_unknown_key_is_named(raw):
    raw["models"]["silero_vad"]["components"]["unified"]["export"] = {"compute_precison": "float32"}
    err = _error(raw)
    assert err.key == "models.silero_vad.components.unified.export.compute_precison"
    assert "unknown key" in str(err) and "compute_precision" in str(err)


def test_wrong_type_is_named(raw):
    raw["models"]["silero_vad_plain"]["components"]["unified"]["inputs"]["audio_input"]["shape"] = "576"
    err = _error(raw)
    assert err.key == "models.silero_vad_plain.components.unified.inputs.audio_input.shape"
    assert "array" in str(err)


def test_wrong_value_is_named(raw):
    raw["defaults"]["export"]["deployment_target"] = "iOS12"
    err = _error(raw)
    assert err.key == "defaults.export.deployment_target"
    assert "'iOS12' is not one of" in str(err)


def test_missing_required_key_is_named(raw):
    del raw["models"]["silero_vad"]["source"]["resource"]
    err = _error(raw)
    assert err.key == "models.silero_vad.source.resource"


def test_source_kind_specific_fields(raw):
    raw["models"]["silero_vad"]["source"] = {"kind": "hf", "repo_id": "nvidia/x", "revision": "main",
                                             "filename": "m.nemo"}
    err = _error(raw)
    assert err.key == "models.silero_vad.source.revision"  # a pinned revision is a full commit sha


def test_unknown_family_is_named(raw):
    raw["models"]["silero_vad"]["family"] = "no_such_family"
    err = _error(raw)
    assert err.key == "models.silero_vad.family"


def test_random_source_cannot_be_marked_real(raw):
    model = raw["models"]["silero_vad"]
    model["source"] = {"kind": "random", "architecture": "tiny", "seed": 0}
    model["synthetic"] = False
    assert _error(raw).key == "models.silero_vad.synthetic"


def test_export_settings_layering(raw):
    raw["models"]["silero_vad"]["export"] = {"compute_precision": "float32"}
    raw["models"]["silero_vad"]["components"]["unified"]["export"] = {"deployment_target": "iOS18"}
    config = build_config(raw)
    unified = config.component("silero_vad", "unified")
    window = config.component("silero_vad", "unified_256ms")
    assert (unified.export.deployment_target, unified.export.compute_precision) == ("iOS18", "float32")
    assert (window.export.deployment_target, window.export.compute_precision) == ("iOS17", "float32")


def test_settings_digest_changes_only_for_the_edited_component(raw):
    before = build_config(raw)
    edited = copy.deepcopy(raw)
    edited["models"]["silero_vad"]["components"]["unified_256ms"]["export"] = {"compute_precision": "float32"}
    after = build_config(edited)
    digest = lambda cfg, c: settings_digest(export_settings(cfg.model("silero_vad"), cfg.component("silero_vad", c)))
    assert digest(before, "unified") == digest(after, "unified")
    assert digest(before, "unified_256ms") != digest(after, "unified_256ms")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_lookup_errors_name_the_key(repo):
    config = load_config(repo / "config.yaml")
    with pytest.raises(ConfigError, match="models.nope"):
        config.model("nope")
    with pytest.raises(ConfigError, match="models.silero_vad.components.nope"):
        config.component("silero_vad", "nope")


# --- whole-file checks (issue 14) --------------------------------------------------------------


def _write(tmp_path, raw, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_model_given_twice_is_refused_naming_key_and_lines(raw, tmp_path):
    text = yaml.safe_dump(raw, sort_keys=False)
    block = text[text.index("  silero_vad:"):text.index("  parakeet_tdt_v3_tiny:")]
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("  parakeet_tdt_v3_tiny:", block + "  parakeet_tdt_v3_tiny:", 1))
    first = text[: text.index("  silero_vad:")].count("\n") + 1
    second = first + block.count("\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "silero_vad"
    assert f"lines {first} and {second}" in str(info.value) and str(path) in str(info.value)
    # Snakemake parses config.yaml itself (last key wins) and hands build_config the dict and path
    with pytest.raises(ConfigError, match="'silero_vad' is given twice"):
        build_config(yaml.safe_load(path.read_text()), str(path))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_tolerances_are_refused(raw, value):
    raw["models"]["silero_vad"]["components"]["unified"]["validate"] = {"atol": value}
    err = _error(raw)
    assert err.key == "models.silero_vad.components.unified.validate.atol" and "finite" in str(err)


def test_nan_written_in_yaml_is_refused(raw, tmp_path):
    raw["defaults"]["validate"] = {"rtol": 0.1}
    path = _write(tmp_path, raw)
    path.write_text(path.read_text().replace("rtol: 0.1", "rtol: .nan"))
    with pytest.raises(ConfigError, match="defaults.validate.rtol"):
        load_config(path)


@pytest.mark.parametrize("results_dir", ["/etc", "../../outside", "results/../..", "."])
def test_results_dir_must_stay_inside_the_checkout(raw, tmp_path, results_dir, monkeypatch):
    monkeypatch.delenv("KILN_ALLOW_RESULTS_OUTSIDE", raising=False)
    raw["results_dir"] = results_dir
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, raw))
    assert info.value.key == "results_dir" and results_dir in str(info.value)
    monkeypatch.setenv("KILN_ALLOW_RESULTS_OUTSIDE", "1")
    assert load_config(_write(tmp_path, raw)).results_dir == results_dir


def test_results_dir_symlinked_out_of_the_checkout_is_refused(raw, tmp_path, monkeypatch):
    monkeypatch.delenv("KILN_ALLOW_RESULTS_OUTSIDE", raising=False)
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "out").symlink_to(tmp_path)
    raw["results_dir"] = "out/results"
    with pytest.raises(ConfigError, match="through a symlink"):
        load_config(_write(tmp_path / "checkout", raw))
    raw["results_dir"] = "build/results"
    assert load_config(_write(tmp_path / "checkout", raw)).results_dir == "build/results"


def test_steps_must_be_an_integer(raw):
    raw["models"]["silero_vad"]["components"]["unified_256ms"]["options"]["steps"] = "eight"
    err = _error(raw)
    assert err.key == "models.silero_vad.components.unified_256ms.options.steps"
    assert "'eight' is not of type 'integer'" in str(err)


def test_check_config_on_a_directory_or_unreadable_path_is_a_clean_error(tmp_path, capsys):
    from kiln.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    for path, words in ((tmp_path, "is a directory"), (blocker / "config.yaml", "cannot read"),
                        (tmp_path / "absent.yaml", "file not found")):
        assert main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(path) in err and words in err, err
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe models")
    assert main(["check-config", str(tmp_path / "binary.yaml")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


# --- hostile YAML is bounded (issue 27, items 5 and 6) -----------------------------------------------

def _list_bomb() -> str:
    """'Billion laughs': nine anchors, each nine aliases of the one before (9^9 list items)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def _mapping_bomb(indent: str = "") -> str:
    """The same with mappings: Snakemake's config merge walks every key of the expansion."""
    lines = [f"{indent}m0: &m0 {{a: 1, b: 1, c: 1, d: 1, e: 1, f: 1, g: 1, h: 1, i: 1}}"]
    lines += [f"{indent}m{i}: &m{i} {{{', '.join(f'{k}: *m{i - 1}' for k in 'abcdefghi')}}}" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    # name: (bytes appended to the real config, words the one-line error holds)
    "list-alias-bomb": (("bomb:\n" + "".join(f"  {line}\n" for line in _list_bomb().splitlines())).encode(),
                        ["expands to more than 1,000,000 nodes", "alias bomb"]),
    "mapping-alias-bomb": (("bomb:\n" + _mapping_bomb("  ")).encode(), ["expands to more than 1,000,000 nodes"]),
    "nested-20000-sequences": (("deep: " + "[" * 20_000 + "]" * 20_000 + "\n").encode(), ["nested deeper than 64 levels"]),
    "nested-20000-mappings": (("deep: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n").encode(),
                              ["nested deeper than 64 levels"]),
    "alias-cycle": (b"cycle: &c [1, *c]\n", ["alias *c refers to the node it is inside"]),
    "not-utf8": (b"bad: \"\xff\xfe\"\n", ["not UTF-8 text (byte 0xff"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_YAML))
def test_check_config_refuses_hostile_yaml_in_one_line(repo, tmp_path, case):
    """`kiln check-config` in a separate process: exit 2, one line naming the file, well within the
    time bound (before: the alias bombs spun past 120 s, deep nesting died of RecursionError)."""
    from tests.clirun import assert_one_line_error, kiln, snapshot

    appended, words = HOSTILE_YAML[case]
    path = tmp_path / "config.yaml"
    path.write_bytes((repo / "config.yaml").read_bytes() + appended)
    before = snapshot(tmp_path)
    result = kiln("check-config", str(path), cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "ConfigError", str(path), *words)
    assert snapshot(tmp_path) == before


def test_yaml_bounds_hold_exactly_at_the_caps():
    from kiln.foundation import yamlio

    assert yamlio.load("[" * yamlio.MAX_DEPTH + "]" * yamlio.MAX_DEPTH) is not None
    with pytest.raises(yamlio.YamlLimitError, match="nested deeper than 64 levels"):
        yamlio.load("[" * (yamlio.MAX_DEPTH + 1) + "]" * (yamlio.MAX_DEPTH + 1))
    # aliases and merge keys within the bounds stay allowed (the Kokoro contract shares blocks so)
    assert yamlio.load("a: &a {x: 1}\nb: *a\nc: {<<: *a, y: 2}\n") == {"a": {"x": 1}, "b": {"x": 1},
                                                                      "c": {"x": 1, "y": 2}}
    # an alias counts as what it expands to: a row of 1 + 999 nodes, and n aliases of it, count
    # 4 (mapping, two keys, the list) + 1,000 + 1,000 n: n = 998 fits, 999 does not
    def document(n):
        return f"r: &r [{', '.join(['0'] * 999)}]\nall: [{', '.join(['*r'] * n)}]\n"

    fits = (yamlio.MAX_NODES - 1004) // 1000
    assert len(yamlio.load(document(fits))["all"]) == fits
    with pytest.raises(yamlio.YamlLimitError, match="expands to more than 1,000,000 nodes"):
        yamlio.load(document(fits + 1))


def test_snakemake_refuses_an_alias_bomb_before_its_own_loader_walks_it(tmp_path):
    """`snakemake -n` on a config.yaml holding a mapping bomb: Snakemake's own config merge walked
    its 387 million keys (still busy after 30 s); kiln reads the file bounded first."""
    import time

    from tests.helpers.workspaces import copy_workflow

    ws = copy_workflow(tmp_path / "ws")
    config = ws.root / "config.yaml"
    config.write_text(config.read_text() + "bomb:\n" + _mapping_bomb("  "))
    start = time.monotonic()
    result = ws.snakemake("-n", "all", check=False)
    assert result.returncode != 0 and time.monotonic() - start < 60
    assert "config.yaml: line" in result.stderr + result.stdout and "expands to more than 1,000,000 nodes" in \
        result.stderr + result.stdout


def test_strict_reads_are_remembered_by_content_only(tmp_path):
    """The Snakefile's two strict reads of config.yaml per start are skipped for a text that passed
    before; an edited text (here: a key given twice) is read again and refused."""
    from kiln.config import check_config_file
    from kiln.foundation.errors import ConfigError

    cache = tmp_path / ".kiln" / "cache" / "strict.json"
    path = tmp_path / "config.yaml"
    path.write_text("results_dir: results\nmodels: {}\n")
    check_config_file(path, cache=cache)
    remembered = json.loads(cache.read_text())
    assert len(remembered["strict_reads"]) == 1
    check_config_file(path, cache=cache)
    assert json.loads(cache.read_text()) == remembered
    path.write_text("results_dir: results\nresults_dir: elsewhere\nmodels: {}\n")
    with pytest.raises(ConfigError, match="'results_dir' is given twice"):
        check_config_file(path, cache=cache)
    cache.write_text("not json")   # a damaged cache is read past, not trusted
    with pytest.raises(ConfigError, match="given twice"):
        check_config_file(path, cache=cache)


#: an edit of a variant entry (spec / options) -> the key the one-line error names and words it holds
VARIANT_EDITS = {
    "unknown spec": (lambda c: c["streaming_encoder_160ms"].update(spec="streaming_encodr"),
                     "models.parakeet_eou_tiny.components.streaming_encoder_160ms.spec",
                     ("builds no component 'streaming_encodr'", "spec:")),
    "unknown option": (lambda c: c["preprocessor_160ms"].update(options={"chunk_mss": 160}),
                       "models.parakeet_eou_tiny.components.preprocessor_160ms.options.chunk_mss",
                       ("takes no option 'chunk_mss'", "chunk_ms")),
    "missing option": (lambda c: c["streaming_encoder"].pop("options"),
                       "models.parakeet_eou_tiny.components.streaming_encoder.options",
                       ("needs option 'chunk_ms'",)),
    "name without spec": (lambda c: c.update(encoder_160=c.pop("streaming_encoder_160ms")) or
                          c["encoder_160"].pop("spec"),
                          "models.parakeet_eou_tiny.components.encoder_160",
                          ("builds no component 'encoder_160'",)),
}


@pytest.mark.parametrize("case", sorted(VARIANT_EDITS))
def test_a_bad_variant_entry_is_one_line_naming_the_key(raw, tmp_path, case):
    """Chunk variants are entries naming their spec and options: `kiln check-config` (a separate
    process) refuses a wrong one in one line naming the key, as the Snakefile's start does."""
    from tests.clirun import assert_one_line_error, kiln

    edit, key, words = VARIANT_EDITS[case]
    edit(raw["models"]["parakeet_eou_tiny"]["components"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert_one_line_error(kiln("check-config", str(path), cwd=tmp_path, timeout=120), "ConfigError",
                          str(path), f"at '{key}'", *words)


def test_a_chunk_variant_keeps_its_export_stamp(raw):
    """``chunk_ms`` sizes the contract, which the export stamp holds: giving a variant its option
    does not change the settings digest embedded in its package (packages stay byte-identical)."""
    config = build_config(raw)
    without = copy.deepcopy(raw)
    for name in ("preprocessor_160ms", "streaming_encoder_160ms"):
        entry = without["models"]["parakeet_eou_tiny"]["components"][name]
        entry.pop("spec"), entry.pop("options")
    bare = build_config(without)
    for name in ("preprocessor_160ms", "streaming_encoder_160ms"):
        model = config.model("parakeet_eou_tiny")
        assert config.component("parakeet_eou_tiny", name).spec != name
        assert settings_digest(export_settings(model, config.component("parakeet_eou_tiny", name))) == \
            settings_digest(export_settings(bare.model("parakeet_eou_tiny"), bare.component("parakeet_eou_tiny", name)))
    # an option that is not only a size (Silero's steps) stays in the stamp
    vad = config.model("silero_vad")
    assert export_settings(vad, vad.components["unified_256ms"])["options"] == {"steps": 8}


def test_a_family_entry_is_bound_to_its_resolved_contract_keeping_its_kinds(raw):
    """config.yaml states a family entry's knobs (here an output's kind); the jobs after prepare
    see the resolved contract (kiln.workflow.entry binds it), in its order, with the kinds kept."""
    raw["models"]["silero_vad"]["components"]["unified"]["outputs"] = {"vad_output": {"kind": "probability"}}
    config = build_config(raw)
    unbound = config.component("silero_vad", "unified")
    assert unbound.inputs == () and [(t.name, t.shape, t.kind) for t in unbound.outputs] == [
        ("vad_output", None, "probability")]
    from tests.conftest import RESOLVED_CONTRACTS

    recorded = json.loads(RESOLVED_CONTRACTS.read_text())["silero_vad"]
    bound = config.bound("silero_vad", recorded).component("silero_vad", "unified")
    assert [(t.name, t.shape, t.dtype, t.kind) for t in bound.outputs] == [
        ("vad_output", (1, 1, 1), "float32", "probability"), ("new_hidden_state", (1, 128), "float32", None),
        ("new_cell_state", (1, 128), "float32", None)]
    assert bound.kinds == {"vad_output": "probability"} and config.models["silero_vad"] is not bound
    # the export stamp (plan time) holds no contract; the package's settings (bound) do
    model = config.model("silero_vad")
    assert "contract" not in export_settings(model, unbound, contract=False)
    assert export_settings(model, bound)["contract"]["inputs"][0] == {"name": "audio_input", "shape": [1, 576],
                                                                      "dtype": "float32"}
    with pytest.raises(ConfigError, match=r"contracts.json has no resolved contract for \['unified_256ms'\]"):
        config.bound("silero_vad", {"unified": recorded["unified"]})


def test_a_plain_block_states_every_shape(raw):
    del raw["models"]["silero_vad_plain"]["components"]["unified"]["outputs"]["vad_output"]["shape"]
    err = _error(raw)
    assert err.key == "models.silero_vad_plain.components.unified.outputs.vad_output.shape"
    del raw["models"]["silero_vad_plain"]["components"]["unified"]["inputs"]
    assert _error(raw).key == "models.silero_vad_plain.components.unified.inputs"


def test_a_family_entrys_tolerance_names_an_output_of_its_spec(raw):
    from kiln.models import check_models

    raw["models"]["silero_vad"]["components"]["unified"]["validate"] = {"outputs": {"speech_prob": {"atol": 0.1}}}
    with pytest.raises(ConfigError) as err:
        check_models(build_config(raw))
    assert err.value.key == "models.silero_vad.components.unified.validate.outputs.speech_prob"
    assert "no output 'speech_prob' in the silero_vad family's unified" in str(err.value)
