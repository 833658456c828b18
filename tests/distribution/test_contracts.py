"""Consumer contracts: the files are valid, the real models' configs match their consumer, a bad
contract is a schema error naming the key, a mismatch is a readable diff, names come from the contract."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from kiln.distribution import contracts
from kiln.distribution.contracts import ContractMismatch, ContractSchemaError
from kiln.family.contract import features
from tests.conftest import REPO

FAMILIES = ("silero_vad", "parakeet_tdt", "parakeet_eou", "kokoro")


def _consumer_facts(contract: dict) -> dict:
    """The facts a real model must have: the consumer's own numbers."""
    facts: dict = {}
    for section in ("params", "control_tokens"):
        for binding in (contract.get(section) or {}).values():
            name, _, index = binding["fact"].partition(".")
            if index:
                facts.setdefault(name, [0] * 4)[int(index)] = binding["consumer"]
            else:
                facts[name] = binding["consumer"]
    return facts


def _check_config(contract, model_cfg, facts, synthetic=False, source_version=None):
    return contracts.check_model(
        contract, model=model_cfg.name, components=list(model_cfg.components), synthetic=synthetic, facts=facts,
        # config.yaml's shapes are what the family's resolver gives (checked by kiln.family.contract.check)
        resolved={c: features(comp) for c, comp in model_cfg.components.items()}, artifacts={},
        source_version=source_version or model_cfg.source.get("version") or "6.0.0",
        contract_file=f"contracts/{model_cfg.family}.yaml",
        specs={n: c.spec for n, c in model_cfg.components.items()})


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_a_valid_contract(family):
    contract = contracts.load_contract(REPO / "contracts" / f"{family}.yaml")
    assert contract["family"] == family and contract["consumer"] == "FluidAudio"


def test_the_real_models_configs_give_the_consumer_what_it_loads(kiln_config):
    """Every non-synthetic model of config.yaml against its family's contract, with the consumer's
    own numbers as facts: what export will build is what FluidAudio loads."""
    checked = []
    for name, model in kiln_config.models.items():
        path = REPO / "contracts" / f"{model.family}.yaml"
        if model.synthetic or not path.is_file():
            continue  # silero_vad_onnx proves the ONNX source kind; FluidAudio loads silero_vad's build
        contract = contracts.load_contract(path)
        report = _check_config(contract, model, _consumer_facts(contract))
        assert report["passed"], name
        checked.append(name)
    assert sorted(checked) == ["kokoro", "parakeet_eou", "parakeet_tdt_v3", "silero_vad"]


def test_a_synthetic_model_takes_its_sizes_from_its_facts(kiln_config):
    model = kiln_config.models["parakeet_tdt_v3_tiny"]
    contract = contracts.load_contract(REPO / "contracts" / "parakeet_tdt.yaml")
    facts = {"sample_rate": 16000, "hop_length": 160, "n_mels": 80, "d_model": 64, "pred_hidden": 64,
             "h_shape": [2, 1, 64], "blank_id": 53}
    report = _check_config(contract, model, facts, synthetic=True)
    assert report["bindings"]["n_mels"] == {"section": "params", "consumer": 128, "fact": "n_mels", "built": 80,
                                            "used": 80, "ok": True}
    # the same sizes on a model that claims to be the real one are the consumer's business
    with pytest.raises(ContractMismatch) as err:
        _check_config(contract, model, facts, synthetic=False)
    text = str(err.value)
    assert "params.n_mels (fact n_mels):\n    - contract: 128\n    + built:    80" in text
    assert "control_tokens.blank (fact blank_id):\n    - contract: 8192\n    + built:    53" in text
    assert "decoder (kiln's contract).inputs.h_in (axis 2):\n    - contract: [2, 1, 640] float32\n    + built:    [2, 1, 64] float32" in text


def test_a_renamed_or_retyped_feature_fails_with_a_diff(kiln_config):
    import dataclasses

    model = kiln_config.models["silero_vad"]
    comp = model.components["unified_256ms"]
    renamed = dataclasses.replace(comp, outputs=tuple(dataclasses.replace(t, name="speech_prob")
                                                      if t.name == "vad_output" else t for t in comp.outputs),
                                  inputs=tuple(dataclasses.replace(t, dtype="float16") if t.name == "cell_state"
                                               else t for t in comp.inputs))
    bad = dataclasses.replace(model, components={**model.components, "unified_256ms": renamed})
    contract = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    with pytest.raises(ContractMismatch) as err:
        _check_config(contract, bad, _consumer_facts(contract))
    text = str(err.value)
    assert text.startswith("silero_vad does not match FluidAudio's contract (contracts/silero_vad.yaml): 2 difference(s)")
    assert ("unified_256ms (kiln's contract).inputs.cell_state:\n    - contract: [1, 128] float32\n"
            "    + built:    [1, 128] float16") in text
    assert ("unified_256ms (kiln's contract).outputs.vad_output:\n    - contract: [1, 1, 1] float32\n    + built:    missing\n"
            "      (it has: new_cell_state, new_hidden_state, speech_prob)") in text


def test_an_input_the_consumer_does_not_feed_must_be_declared(kiln_config, tmp_path):
    data = yaml.safe_load((REPO / "contracts" / "kokoro.yaml").read_text())
    for comp in data["components"].values():
        comp.pop("extra_inputs")
    path = tmp_path / "kokoro.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractMismatch, match=r"kokoro_5s \(kiln's contract\).inputs.speed:\n    - contract: not an input"):
        _check_config(contracts.load_contract(path), kiln_config.models["kokoro"],
                      {"sample_rate": 24000, "ref_s_dim": 256, "harmonics": 9})


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["components"].__setitem__("joint_v4", d["components"]["decoder"]),
     "at 'components.joint_v4': the parakeet_tdt family builds no component 'joint_v4'"),
    (lambda d: d["components"]["decoder"]["inputs"].__setitem__("h_state", {"dtype": "float32"}),
     "at 'components.decoder.inputs.h_state': decoder has no input 'h_state' (it has: targets, target_length, h_in, c_in)"),
    (lambda d: d["components"]["decoder"].__setitem__("filename", "Decoder"),
     "at 'components.decoder': Additional properties are not allowed ('filename' was unexpected)"),
    (lambda d: d["params"]["d_model"].__setitem__("facts", "d_model"),
     "at 'params.d_model': Additional properties are not allowed ('facts' was unexpected)"),
    (lambda d: d["components"]["encoder"]["outputs"]["encoder"].__setitem__("shape", [1, "width", 188]),
     "at 'components.encoder.outputs.encoder.shape': 'width' is not a param"),
    (lambda d: d["components"]["encoder"]["outputs"]["encoder"].__setitem__("dtype", "float64"),
     "at 'components.encoder.outputs.encoder.dtype': 'float64' is not one of"),
])
def test_a_bad_contract_is_a_schema_error_naming_the_key(tmp_path, edit, message):
    data = yaml.safe_load((REPO / "contracts" / "parakeet_tdt.yaml").read_text())
    edit(data)
    path = tmp_path / "parakeet_tdt.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractSchemaError) as err:
        contracts.load_contract(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_an_entry_of_another_name_says_which_spec_it_is(tmp_path, kiln_config):
    """A consumer contract's variant entry names its family spec as config.yaml does (no name
    parsing): an unknown spec is a schema error naming the key, a spec other than the model's
    entry's is a contract difference."""
    data = yaml.safe_load((REPO / "contracts" / "parakeet_eou.yaml").read_text())
    data["components"]["streaming_encoder_160ms"]["spec"] = "encoder"
    path = tmp_path / "parakeet_eou.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractSchemaError, match=r"at 'components.streaming_encoder_160ms.spec': the parakeet_eou "
                                                  r"family builds no component 'encoder'"):
        contracts.load_contract(path)
    silero = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    model = kiln_config.model("silero_vad")
    entry = dataclasses.replace(model.components["unified_256ms"], spec="unified_256ms")
    other = dataclasses.replace(model, components={**model.components, "unified_256ms": entry})
    with pytest.raises(ContractMismatch, match=r"components.unified_256ms.spec:\n    - contract: unified\n"
                                               r"    \+ built:    unified_256ms"):
        _check_config(silero, other, _consumer_facts(silero))


def test_published_names_come_from_the_contract(kiln_config):
    eou = contracts.load_contract(REPO / "contracts" / "parakeet_eou.yaml")
    names = contracts.published_names(eou, kiln_config.models["parakeet_eou_tiny"].components, None)
    assert names == {"preprocessor": "preprocessor", "streaming_encoder": "320ms/streaming_encoder",
                     "preprocessor_160ms": "preprocessor_160ms", "streaming_encoder_160ms": "160ms/streaming_encoder",
                     "decoder": "decoder", "joint_decision": "joint_decision"}
    silero = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    assert contracts.published_names(silero, ["unified_256ms"], "6.0.0") == {
        "unified_256ms": "silero-vad-unified-256ms-v6.0.0"}
    with pytest.raises(contracts.ContractError, match="needs the source's version"):
        contracts.published_names(silero, ["unified_256ms"], None)


def test_side_files_are_written_from_the_facts(tmp_path):
    tdt = contracts.load_contract(REPO / "contracts" / "parakeet_tdt.yaml")
    assert contracts.write_side_files(tdt, {"vocabulary": ["<unk>", "▁the", "s"]}, tmp_path) == ["parakeet_vocab.json"]
    assert json.loads((tmp_path / "parakeet_vocab.json").read_text()) == {"0": "<unk>", "1": "▁the", "2": "s"}


def test_silero_build_publish_name_and_contract_agree_on_the_release(kiln_config, repo):
    """FluidAudio's bundles are named v6.0.0: the contract says so, config.yaml's source takes that
    release, the published name carries it, and `make setup` installs it."""
    import tomllib

    silero = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    model = kiln_config.model("silero_vad")
    assert silero["source_version"] == model.source["version"] == "6.0.0"
    report = _check_config(silero, model, _consumer_facts(silero))
    assert report["source_version"] == {"contract": "6.0.0", "built": "6.0.0"}
    assert report["published_names"]["unified_256ms"] == "silero-vad-unified-256ms-v6.0.0"
    # every pinned package source is the environment's pin or a release the Makefile installs beside it
    pins = dict(d.split("==") for d in tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"])
    makefile = (repo / "Makefile").read_text()
    for name, cfg in kiln_config.models.items():
        package, version = cfg.source.get("package"), cfg.source.get("version")
        if version:
            assert pins.get(package) == version or f"{package}=={version}" in makefile, name


def test_a_real_model_from_another_release_is_a_mismatch_naming_both_versions(kiln_config):
    silero = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    model = kiln_config.model("silero_vad")
    with pytest.raises(ContractMismatch) as err:
        _check_config(silero, model, _consumer_facts(silero), source_version="6.2.3")
    assert "source_version:\n    - contract: 6.0.0\n    + built:    6.2.3" in str(err.value)
    with pytest.raises(contracts.SourceVersionMismatch) as err:
        contracts.check_source_version(silero, model="silero_vad", source_version="6.2.3", synthetic=False,
                                       contract_file="contracts/silero_vad.yaml")
    assert str(err.value).startswith("contracts/silero_vad.yaml: FluidAudio loads source release 6.0.0, but "
                                     "model 'silero_vad' is built from 6.2.3")
    # random weights come from no release: a synthetic model is not held to it
    contracts.check_source_version(silero, model="tiny", source_version=None, synthetic=True,
                                   contract_file="contracts/silero_vad.yaml")


# --- hostile contract files are bounded (issue 27, items 5 and 6) ------------------------------------

HOSTILE_CONTRACTS = {
    "nested-20000-sequences": (b"family: silero_vad\nx: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
                               "line 2: nested deeper than 64 levels"),
    "nested-20000-mappings": (b"family: silero_vad\nx: " + b"{a: " * 20_000 + b"1" + b"}" * 20_000 + b"\n",
                              "line 2: nested deeper than 64 levels"),
    "not-utf8": (b"family: silero_vad\nconsumer: \"Fluid\xe9Audio\"\n", "not UTF-8 text (byte 0xe9 at offset 35, line 2)"),
    "alias-bomb": (("family: silero_vad\n" + "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 9)}]\n" for i in range(9))).encode(),
        "expands to more than 1,000,000 nodes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CONTRACTS))
def test_publish_refuses_a_hostile_contract_in_one_line(tmp_path, case):
    """`kiln publish --dry-run` reads contracts/<family>.yaml: exit 2, one line naming the file,
    nothing staged (before: RecursionError and UnicodeDecodeError tracebacks)."""
    from tests.clirun import assert_one_line_error, kiln, snapshot

    content, words = HOSTILE_CONTRACTS[case]
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "silero_vad.yaml").write_bytes(content)
    (tmp_path / "config.yaml").write_bytes((REPO / "config.yaml").read_bytes())
    results = tmp_path / "results" / "silero_vad"
    results.mkdir(parents=True)
    for name in ("metadata.json", "quantization_summary.json"):
        (results / name).write_text("{}\n")
    before = snapshot(tmp_path)
    result = kiln("publish", "silero_vad", "--dry-run", cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "ContractSchemaError", "contracts/silero_vad.yaml: ", words)
    assert snapshot(tmp_path) == before   # no publish/ folder, no temporaries


@pytest.mark.parametrize("where, name, problem", [
    ("file", "../../../../x", "has the part '..'"),
    ("file", "320ms/../../x", "has the part '..'"),
    ("file", "/etc/x", "has the part ''"),
    ("file", "a/b/c", "has more than 1 folder(s)"),
    ("file", ".hidden", "has the part '.hidden' (hidden, or a backslash or NUL)"),
    ("file", "a\\b", "has the part 'a\\\\b' (hidden, or a backslash or NUL)"),
    ("files", "..", "has the part '..'"),
    ("files", "sub/vocab.json", "holds a path separator"),
])
def test_a_published_name_that_is_not_a_plain_name_is_refused(tmp_path, where, name, problem):
    data = yaml.safe_load((REPO / "contracts" / "parakeet_tdt.yaml").read_text())
    if where == "file":
        data["components"]["decoder"]["file"] = name
        key = "components.decoder.file"
    else:
        data["files"] = {name: data["files"]["parakeet_vocab.json"]}
        key = f"files.{name}"
    path = tmp_path / "parakeet_tdt.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ContractSchemaError) as err:
        contracts.load_contract(path)
    assert str(err.value) == (f"{path}: at '{key}': {name!r} is not a plain file name ({problem}); published files "
                              f"stay inside the model repo")


def test_the_schema_alone_refuses_names_leaving_the_folder():
    from kiln import schemas

    data = yaml.safe_load((REPO / "contracts" / "parakeet_eou.yaml").read_text())
    schemas.check(data, "contract", ContractSchemaError, "eou")   # 320ms/streaming_encoder: one folder
    for bad in ("../x", "a/../b", "./x", "a/b/c", ".x"):
        data["components"]["decoder"]["file"] = bad
        with pytest.raises(ContractSchemaError, match="at 'components.decoder.file'"):
            schemas.check(data, "contract", ContractSchemaError, "eou")


def test_a_substituted_version_cannot_make_a_name_leave_the_folder():
    silero = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    with pytest.raises(contracts.ContractError, match=r"gives 'silero-vad-unified-256ms-v/../../x', not a plain file "
                                                      r"name \(has the part '..'\)"):
        contracts.published_names(silero, ["unified_256ms"], "/../../x")


def test_built_files_are_checked_against_the_same_resolved_contract(kiln_config):
    """The consumer's features and each built artifact's real I/O are compared with the one resolved
    contract, by the one comparison (kiln.family.contract.differences): a package whose input is off
    by one axis is a diff naming the artifact, the tensor and the axis."""
    model = kiln_config.models["silero_vad"]
    contract = contracts.load_contract(REPO / "contracts" / "silero_vad.yaml")
    resolved = {c: features(comp) for c, comp in model.components.items()}
    built = json.loads(json.dumps(resolved["unified"]))
    built["inputs"]["audio_input"]["shape"] = [1, 512]
    built["outputs"]["speech"] = {"shape": [1], "dtype": "float32"}
    with pytest.raises(ContractMismatch) as err:
        contracts.check_model(contract, model="silero_vad", components=list(model.components), synthetic=False,
                              facts=_consumer_facts(contract), resolved=resolved,
                              artifacts={"unified": {"unified.mlpackage": built}}, source_version="6.0.0",
                              contract_file="contracts/silero_vad.yaml")
    text = str(err.value)
    assert text.startswith("silero_vad does not match FluidAudio's contract (contracts/silero_vad.yaml): "
                           "2 difference(s)"), text
    assert ("unified (unified.mlpackage).inputs.audio_input (axis 1):\n    - contract: [1, 576] float32\n"
            "    + built:    [1, 512] float32") in text
    assert "unified (unified.mlpackage).outputs.speech:\n    - contract: not an output of kiln's contract" in text
