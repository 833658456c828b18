"""The full-size stand-ins are the real architectures as public records show them: every verified
key of a record is the value the stand-in's checkpoint config (NeMo config / config.json) carries,
the assumed keys are named with their reason, and config.yaml says which is which."""

from __future__ import annotations

import re

import pytest

from kiln.foundation.errors import ModelError
from kiln.models import records
from kiln.models.parakeet_eou import checkpoint as eou_checkpoint
from kiln.models.parakeet_tdt import checkpoint as _parakeet_random
from kiln.models.kokoro import checkpoint as kokoro_checkpoint
from tests.conftest import REPO

#: record -> (the architectures of its family, the real model in config.yaml)
RECORDS = {"parakeet_tdt_0.6b_v3": (_parakeet_random.ARCHITECTURES, "parakeet_tdt_v3"),
           "parakeet_realtime_eou_120m_v1": (eou_checkpoint.ARCHITECTURES, "parakeet_eou"),
           "kokoro_82m": (kokoro_checkpoint.ARCHITECTURES, "kokoro")}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_cites_its_sources_and_the_standin_takes_its_values(name):
    rec = records.load(name)
    assert rec.sources and all(s["cite"] and s["shows"] for s in rec.sources)
    full = RECORDS[name][0]["full"]
    for key, path in rec.verified.items():
        assert full[key] == rec.value(path), key
    assert set(full) == set(rec.verified) | set(rec.assumed)
    assert all(len(why) > 20 for why in rec.assumed.values())


def _get(tree, path):
    for part in path.split("."):
        tree = tree[part]
    return tree


def test_the_tdt_standin_nemo_config_equals_the_recorded_encoder_and_preprocessor(tmp_path):
    """Key by key, the NeMo config the full TDT stand-in is built with against the real checkpoint's
    recorded model_config (the issue's finding: kiln had xscaling true, the real encoder false)."""
    rec = records.load("parakeet_tdt_0.6b_v3")
    cfg = _parakeet_random.nemo_config(_parakeet_random.ARCHITECTURES["full"], tmp_path)
    for section in ("encoder", "preprocessor"):
        for key, value in rec.record[section].items():
            assert cfg[section][key] == value, f"{section}.{key}: stand-in {cfg[section][key]!r}, real {value!r}"
    assert cfg["encoder"]["xscaling"] is False
    assert cfg["decoder"]["prednet"] == {**cfg["decoder"]["prednet"], **rec.record["decoder"]["prednet"]}
    assert cfg["decoder"]["blank_as_pad"] is True
    assert cfg["joint"]["jointnet"]["activation"] == rec.value("joint.jointnet.activation")
    durations = rec.value("tdt_durations")
    assert cfg["model_defaults"]["tdt_durations"] == durations
    # joint outputs: the pieces, blank, and one logit per duration
    assert rec.value("decoder.vocab_size") + 1 + len(durations) == rec.value("joint.num_classes_with_durations")


def test_the_eou_standin_matches_its_record_and_the_consumer_contract(tmp_path):
    rec = records.load("parakeet_realtime_eou_120m_v1")
    arch = eou_checkpoint.ARCHITECTURES["full"]
    cfg = eou_checkpoint.nemo_config(arch, tmp_path)
    for key, value in rec.record["encoder"].items():
        assert cfg["encoder"][key] == value, key
    assert cfg["encoder"]["feat_in"] == rec.value("preprocessor.features")
    # the causal conv cache FluidAudio carries is kernel - 1 frames; the joint covers pieces + blank
    assert rec.value("encoder.conv_kernel_size") - 1 == 8
    assert rec.value("decoder.vocab_size") + 1 == rec.value("joint.num_classes_with_blank")
    # the tiny model keeps its values (its checkpoint bytes do not change)
    tiny = eou_checkpoint.nemo_config(eou_checkpoint.ARCHITECTURES["tiny"], tmp_path)["encoder"]
    assert (tiny["xscaling"], tiny["conv_norm_type"]) == (True, "layer_norm")


def test_the_kokoro_standin_config_is_the_recorded_config_json():
    rec = records.load("kokoro_82m")
    config = kokoro_checkpoint.kmodel_config(kokoro_checkpoint.ARCHITECTURES["full"])
    assert config == rec.value("config")
    assert config["n_token"] == 178 and len(config["vocab"]) == 114 and max(config["vocab"].values()) == 177
    assert config["vocab"]["A"] == 24 and config["vocab"]["ʒ"] == 147 and "¡" not in config["vocab"]


def test_a_record_and_kiln_must_agree_on_what_is_assumed():
    with pytest.raises(ModelError, match="assumed keys"):
        records.standin("parakeet_tdt_0.6b_v3", {})


def _model_block(model: str) -> str:
    """The lines of ``model``'s entry in config.yaml (up to the next model)."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    start = text.index(f"\n  {model}:\n") + 1
    following = re.search(r"\n  [a-z_0-9]+:\n", text[start:])
    return text[start:start + following.start()] if following else text[start:]


def _config_yaml_standin_lines(model: str) -> dict[str, set[str]]:
    block = _model_block(model)
    found = {}
    for kind in ("verified", "assumed"):
        match = re.search(rf"#\s+{kind}: (.*(?:\n\s*#\s{{6,}}\S.*)*)", block)
        assert match, f"config.yaml: no '{kind}:' line in the stand-in note of {model}"
        words = re.sub(r"\n\s*#", " ", match.group(1))
        found[kind] = {w for w in re.split(r"[,\s]+", words.strip()) if w and w != "(none)"}
    return found


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_config_yaml_says_which_standin_keys_are_verified_and_which_assumed(name):
    rec = records.load(name)
    model = RECORDS[name][1]
    assert f"records/{name}.yaml" in _model_block(model)
    lines = _config_yaml_standin_lines(model)
    assert lines["verified"] == set(rec.verified) and lines["assumed"] == set(rec.assumed)
