"""kiln's own `.nemo` pre-check (`kiln.sources.nemo_archive`) refuses crafted archives by itself,
before NeMo opens them: class references off the exact allow-list, a config other than the one NeMo
loads, and any link. Archives are built here from scratch (no NeMo needed)."""

from __future__ import annotations

import io
import tarfile

import pytest
import yaml

from kiln.foundation.errors import SourceError
from kiln.models._nemo import check_nemo_archive as reexported
from kiln.sources.nemo_archive import ALLOWED_CLASSES, check_nemo_archive

GOOD_CONFIG = {
    "sample_rate": 16000,
    "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "features": 80},
    "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "n_layers": 2},
    "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder"},
    "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint"},
    "target": "nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel",
}


def _regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _archive(path, *members) -> str:
    with tarfile.open(path, "w:") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _config(**changes) -> bytes:
    config = yaml.safe_load(yaml.safe_dump(GOOD_CONFIG))
    for key, value in changes.items():
        config[key] = value
    return yaml.safe_dump(config).encode()


def _with(config_bytes: bytes, *extra):
    return (_regular("./model_config.yaml", config_bytes), _regular("./model_weights.ckpt", b"weights"), *extra)


def test_a_plain_archive_passes_and_returns_the_config(tmp_path):
    path = _archive(tmp_path / "good.nemo", *_with(_config()))
    assert check_nemo_archive(path) == GOOD_CONFIG
    assert reexported is check_nemo_archive  # callers of kiln.models._nemo keep working
    assert GOOD_CONFIG["target"] in ALLOWED_CLASSES


CRAFTED = {
    # name: (members, words the error must contain)
    "cls-params-os-system": (
        lambda: _with(_config(preprocessor={"cls": "os.system", "params": {"command": "id"}})),
        ["model_config.yaml", "'preprocessor.cls'", "'os.system'"]),
    "target-with-nemo-prefix": (
        lambda: _with(_config(encoder={"_target_": "nemo.collections.asr.models.ctc_models.os.system"})),
        ["'encoder._target_'", "ctc_models.os.system"]),
    "nested-model-target-exec": (
        lambda: _with(_config(model={"target": "builtins.exec"})),
        ["'model.target'", "'builtins.exec'"]),
    "root-config-beside-harmless-sub": (
        lambda: (_regular("model_config.yaml", _config(target="os.system")),
                 _regular("sub/model_config.yaml", _config()), _regular("model_weights.ckpt", b"w")),
        ["model_config.yaml 'target'", "'os.system'"]),
    "dot-root-config-beside-harmless-sub": (
        lambda: (_regular("./model_config.yaml", _config(target="os.system")),
                 _regular("./sub/model_config.yaml", _config()), _regular("./model_weights.ckpt", b"w")),
        ["model_config.yaml 'target'", "'os.system'"]),
    "two-level-symlink-chain": (
        lambda: _with(_config(), _link("./a/hop", "../b"), _link("./b", "../../etc/shadow")),
        ["'./a/hop'", "symlink"]),
    # and the variants around them
    "harmless-root-then-malicious-dot-root": (
        lambda: (_regular("model_config.yaml", _config()), _regular("./model_config.yaml", _config(target="os.system"))),
        ["'./model_config.yaml'", "same path as 'model_config.yaml'"]),
    "hard-link-inside": (
        lambda: _with(_config(), _link("./copy.ckpt", "model_weights.ckpt", tarfile.LNKTYPE)),
        ["'./copy.ckpt'", "hard link"]),
    "interpolated-target": (
        lambda: _with(_config(joint={"_target_": "${oc.env:EVIL}"})),
        ["'joint._target_'", "${oc.env:EVIL}"]),
    "duplicate-key-hides-target": (
        lambda: _with(b"target: nemo.collections.asr.models.rnnt_bpe_models.EncDecRNNTBPEModel\n"
                      b"target: os.system\n"),
        ["model_config.yaml", "key 'target' is given twice"]),
    "no-root-config": (
        lambda: (_regular("sub/model_config.yaml", _config()),),
        ["no model_config.yaml at its root"]),
    # hostile YAML is bounded like every YAML kiln reads (kiln.foundation.yamlio)
    "alias-bomb-config": (
        lambda: _with("".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 9)}]\n"
                              for i in range(9)).encode()),
        ["model_config.yaml: line 7: the document expands to more than 1,000,000 nodes"]),
    "nested-20000-config": (
        lambda: _with(b"model: " + b"[" * 20_000 + b"]" * 20_000 + b"\n"),
        ["model_config.yaml: line 1: nested deeper than 64 levels"]),
    "non-utf8-config": (
        lambda: _with(b"target: \"\xff\"\n"),
        ["model_config.yaml: not UTF-8 text (byte 0xff at offset 9, line 1)"]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archives_are_refused_by_kilns_own_check(tmp_path, case):
    build, words = CRAFTED[case]
    path = _archive(tmp_path / f"{case}.nemo", *build())
    with pytest.raises(SourceError) as caught:
        check_nemo_archive(path)
    message = str(caught.value)
    assert f"{case}.nemo" in message
    for word in words:
        assert word in message, message
    assert not (tmp_path / "etc").exists() and sorted(p.name for p in tmp_path.iterdir()) == [f"{case}.nemo"]
