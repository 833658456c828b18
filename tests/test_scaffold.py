"""`kiln new-model` writes a family package and a config block that export and validate (the whole workflow
of a scaffolded model is tested in tests/scenarios/test_scaffold_workflow.py)."""

from __future__ import annotations

import importlib
import shutil
import sys

import pytest

from kiln.cli import main
from kiln.config import load_config
from kiln.scaffold import ScaffoldError, new_model


@pytest.mark.parametrize("task", ["vad", "stt", "tts", "generic"])
def test_scaffolded_model_exports(task, tmp_path, repo, monkeypatch):
    (tmp_path / "src" / "kiln" / "models").mkdir(parents=True)
    config_path = tmp_path / "config.yaml"
    shutil.copy(repo / "config.yaml", config_path)
    name = f"my_{task}"
    assert main(["new-model", task, name, "--root", str(tmp_path), "--config", str(config_path)]) == 0
    package = tmp_path / "src" / "kiln" / "models" / name
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "build.py", "checkpoint.py", "feeds.py",
                                                          "judge.py", "net.py"]
    # the package imported as kiln imports a family: kiln.models.<name>, its parts by absolute name
    import kiln.models

    monkeypatch.setattr(kiln.models, "__path__", [*kiln.models.__path__, str(package.parent)])
    for key in [k for k in sys.modules if k == f"kiln.models.{name}" or k.startswith(f"kiln.models.{name}.")]:
        monkeypatch.delitem(sys.modules, key)
    module = importlib.import_module(f"kiln.models.{name}")
    assert name in kiln.models.family_names()
    # the config block validates once the family package is importable
    monkeypatch.setattr("kiln.config.family_exists", lambda family: True)
    config = load_config(config_path)
    model = config.model(name)
    assert model.synthetic and "silero_vad" in config.models  # the existing models are kept

    from kiln.export.convert import export_component
    from kiln.sources import SourceRecord, describe_file

    from kiln.validate.reference import make_reference, torch_context

    ckpt = module.FAMILY.make_random("default", seed=0, overrides={}, out_dir=tmp_path)
    record = SourceRecord("random", name, None, None, True, [describe_file(ckpt)])
    source = module.FAMILY.load(record)
    # the block states only knobs: the components get their shapes as the prepare job resolves them
    from kiln.workflow.jobs import resolved_contracts

    model = config.bound(name, resolved_contracts(config, name, module.FAMILY.facts(source))).model(name)
    ctx = torch_context(module.FAMILY, source, model)
    for component in model.components.values():
        report = export_component(module.FAMILY, source, component, tmp_path / f"{component.name}.mlpackage")
        assert report["specification_version"] == 8
        reference = make_reference(ctx, component)   # the validation feeds of the task's modality
        assert reference.steps >= 1 and set(reference.outputs[0]) == {t.name for t in component.outputs}


def test_refuses_bad_names_and_duplicates(tmp_path, repo):
    (tmp_path / "src" / "kiln" / "models").mkdir(parents=True)
    config_path = tmp_path / "config.yaml"
    shutil.copy(repo / "config.yaml", config_path)
    with pytest.raises(ScaffoldError, match="lower-case identifier"):
        new_model("stt", "My-Model", tmp_path, config_path)
    with pytest.raises(ScaffoldError, match="models.silero_vad already exists"):
        new_model("vad", "silero_vad", tmp_path, config_path)
    with pytest.raises(ScaffoldError, match="unknown template 'ocr'"):
        new_model("ocr", "x", tmp_path, config_path)
    with pytest.raises(ScaffoldError, match="task label 'Pitch!'"):
        new_model("generic", "x", tmp_path, config_path, label="Pitch!")


def test_generic_template_takes_any_task_label(tmp_path, repo, monkeypatch):
    (tmp_path / "src" / "kiln" / "models").mkdir(parents=True)
    config_path = tmp_path / "config.yaml"
    shutil.copy(repo / "config.yaml", config_path)
    assert main(["new-model", "generic", "my_pitch", "--task", "pitch", "--root", str(tmp_path),
                 "--config", str(config_path)]) == 0
    monkeypatch.setattr("kiln.config.family_exists", lambda family: True)
    model = load_config(config_path).model("my_pitch")
    assert model.task == "pitch" and model.components["model"].kinds == {"output": "features"}


def test_plain_template_is_a_config_block_alone(tmp_path, repo, monkeypatch):
    """`kiln new-model plain NAME`: no module, a block of family plain and a traced network to start
    from; the block builds (export + validation feeds) as written."""
    config_path = tmp_path / "config.yaml"
    shutil.copy(repo / "config.yaml", config_path)
    assert main(["new-model", "plain", "my_plain", "--root", str(tmp_path), "--config", str(config_path)]) == 0
    assert not (tmp_path / "src").exists()
    assert (tmp_path / "weights" / "my_plain.jit").is_file()
    monkeypatch.chdir(tmp_path)      # the block's source path is relative to the checkout
    config = load_config(config_path)
    model = config.model("my_plain")
    assert model.family == "plain" and model.network == {"kind": "torchscript"}

    from kiln.export.convert import export_component
    from kiln.models import check_models, family_of
    from kiln.sources import fetch
    from kiln.validate.reference import make_reference, torch_context

    check_models(config)
    family = family_of(model)
    source = family.load(fetch("my_plain", "plain", model.source, tmp_path / "ckpt"))
    component = model.components["model"]
    report = export_component(family, source, component, tmp_path / "model.mlpackage")
    assert report["specification_version"] == 8
    reference = make_reference(torch_context(family, source, model), component)
    assert reference.steps == 8
