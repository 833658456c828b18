"""Shared NeMo helpers for the NeMo-based families (Parakeet TDT now, Parakeet EOU next).

- :func:`check_nemo_archive` (from :mod:`kiln.sources.nemo_archive`): before NeMo touches a ``.nemo``
  archive, kiln reads its members itself (regular files and directories only) and the very config
  NeMo will load, whose class references must be on an exact allow-list.
- :func:`restore_nemo`: restores a model offline with weights loaded by ``torch.load(...,
  weights_only=True)``. NeMo 3.0's ``SaveRestoreConnector._load_state_dict_from_disk`` calls
  ``torch.load(path, map_location=...)`` *without* ``weights_only``, relying on torch's default
  (``True`` since torch 2.6, but switched off by ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``). kiln passes
  ``weights_only=True`` explicitly through its own connector, so the environment cannot turn it off.
  NeMo's own extraction (``safe_extract(..., skip_unsafe=True)``) silently *skips* unsafe members;
  kiln refuses the whole file instead.
- :func:`build_sentencepiece`: a small BPE SentencePiece tokenizer trained offline on a few
  sentences, padded with filler pieces to an exact vocabulary size (8192 for the full-size random
  Parakeet, where there is not enough text to learn that many merges).
- :class:`MelFrontend`: NeMo's ``AudioToMelSpectrogramPreprocessor`` (``FilterbankFeatures``)
  rewritten as a pure, traceable module with fixed shapes: the STFT is ``kiln.export.rewrites.ConvSTFT``
  (a strided ``conv1d`` with a windowed DFT basis, real and imaginary parts split), no complex numbers,
  no dither, the per-feature normalisation done with a length mask instead of per-item slicing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kiln.foundation.errors import ModelError, SourceError
from kiln.foundation.fsutil import atomic_path
from kiln.export.rewrites import ConvSTFT
from kiln.sources.nemo_archive import CONFIG_MEMBER, check_nemo_archive  # noqa: F401  (re-export; restore_nemo uses it)

#: what NeMo adds to the log magnitude before ``log`` when ``log_zero_guard_type == "add"``
NEMO_NORMALIZE_EPS = 1e-5


# -- .nemo archives: the pre-check lives in kiln.sources.nemo_archive (re-exported here) -------------

@contextlib.contextmanager
def quiet_nemo() -> Iterator[None]:
    """Silence NeMo's info/warning chatter (it logs on import, build, save and restore)."""
    from nemo.utils import logging as nemo_logging

    previous = nemo_logging.getEffectiveLevel()
    nemo_logging.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nemo_logging.setLevel(previous)


def _safe_connector():
    from nemo.core.connectors.save_restore_connector import SaveRestoreConnector

    class WeightsOnlyConnector(SaveRestoreConnector):
        """NeMo's connector with ``torch.load(weights_only=True)`` made explicit."""

        @staticmethod
        def _load_state_dict_from_disk(model_weights, map_location="cpu"):
            return torch.load(model_weights, map_location=map_location, weights_only=True)

    return WeightsOnlyConnector()


def restore_nemo(path: str | Path, model_class=None):
    """Check ``path`` (:func:`check_nemo_archive`), then restore it on CPU, offline, in eval mode."""
    path = Path(path)
    check_nemo_archive(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with quiet_nemo():
        if model_class is None:
            from nemo.collections.asr.models import ASRModel as model_class
        try:
            model = model_class.restore_from(str(path), map_location="cpu",
                                             save_restore_connector=_safe_connector())
        except SourceError:
            raise
        except Exception as exc:  # NeMo raises anything from tar, yaml, hydra and torch.load
            raise SourceError(f"{path}: NeMo could not restore the model: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    model.eval()
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def typecheck_disabled() -> Iterator[None]:
    """NeMo's neural-type checks (``@typecheck``) break ``torch.jit.trace``; switch them off."""
    from nemo.core.classes.common import is_typecheck_enabled, typecheck

    previous = is_typecheck_enabled()
    typecheck.set_typecheck_enabled(False)
    try:
        yield
    finally:
        typecheck.set_typecheck_enabled(previous)


# -- random-initialised transducer configs -------------------------------------------------------------

def resolve_architecture(family: str, architectures: Mapping[str, Mapping[str, Any]], name: str,
                         overrides: Mapping[str, Any]) -> dict:
    """``architectures[name]`` with ``overrides`` applied; an unknown name or override key is a
    :class:`ModelError` naming it and what is allowed."""
    if name not in architectures:
        raise ModelError(f"{family}: unknown architecture '{name}' (known: {', '.join(architectures)})")
    arch = dict(architectures[name])
    unknown = sorted(set(overrides) - set(arch))
    if unknown:
        raise ModelError(f"{family}: unknown architecture override(s) {unknown} "
                         f"(allowed: {', '.join(sorted(arch))})")
    arch.update(overrides)
    return arch


def transducer_heads(arch) -> dict:
    """The RNN-T prediction net (``decoder``) and ``joint`` sections of a NeMo transducer config for
    ``arch`` (``pred_hidden``, ``pred_rnn_layers``, ``joint_hidden``): shared by the random TDT and
    EOU checkpoints, which differ in their encoders, decoding and loss."""
    return {
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
            "random_state_sampling": False, "blank_as_pad": True,
            "prednet": {"pred_hidden": arch["pred_hidden"], "pred_rnn_layers": arch["pred_rnn_layers"],
                        "t_max": None, "dropout": 0.2},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
            "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
            "jointnet": {"joint_hidden": arch["joint_hidden"], "activation": "relu", "dropout": 0.2},
        },
    }


# -- reproducible archives --------------------------------------------------------------------------

#: NeMo names each artifact it packs ``<uuid4 hex>_<file name>`` (``register_artifact``)
_ARTIFACT_NAME = re.compile(r"^(\./)?[0-9a-f]{32}_(.+)$")


def save_reproducibly(model, out: Path) -> Path:
    """``model.save_to(out)``, made byte-for-byte reproducible: NeMo names each packed artifact
    (tokenizer files) by a random uuid, referenced from ``model_config.yaml``, and stamps every member
    with the time of saving, so two builds of one seed in two checkouts differed, and with them the
    source digest every downstream artifact records. Here the artifacts are renamed by the sha256 of
    their bytes (the config follows), paths inside ``out``'s folder are recorded relative to it, and
    the tar is rewritten in name order with zeroed times and owners. Written to a temporary sibling
    and renamed; NeMo's own archive goes to a temporary folder beside it, named so that a killed
    build's leftovers are recognised as temporaries (removed by the next write, never published)."""
    out = Path(out)
    with atomic_path(out) as staged, tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".dir.tmp",
                                                                  dir=out.parent) as tmp:
        raw = Path(tmp) / "raw.nemo"
        model.save_to(str(raw))
        with tarfile.open(raw, "r:") as source, tarfile.open(staged, "w:", format=tarfile.PAX_FORMAT) as archive:
            members = source.getmembers()
            renamed = {}
            for member in members:
                match = _ARTIFACT_NAME.match(member.name)
                if match and member.isfile():
                    digest = hashlib.file_digest(source.extractfile(member), "sha256").hexdigest()
                    renamed[member.name.removeprefix("./")] = f"{digest[:32]}_{match.group(2)}"

            def new_name(member) -> str:
                name = member.name.removeprefix("./")
                if not name:  # the root directory entry
                    return member.name
                return ("./" if member.name.startswith("./") else "") + renamed.get(name, name)

            for member in sorted(members, key=new_name):  # in the new names' order
                info = tarfile.TarInfo(new_name(member))
                info.type, info.mtime, info.uid, info.gid, info.uname, info.gname = member.type, 0, 0, 0, "", ""
                info.mode = 0o755 if member.isdir() else 0o644
                data = source.extractfile(member) if member.isfile() else None
                if data is not None and member.name.removeprefix("./") == CONFIG_MEMBER:
                    text = data.read().decode("utf-8")
                    for old, new in renamed.items():
                        text = text.replace(f"nemo:{old}", f"nemo:{new}")
                    for folder in {str(out.parent.resolve()), str(out.parent)} - {"."}:
                        text = text.replace(folder + os.sep, "")  # e.g. tokenizer.dir (unused on restore)
                    data = io.BytesIO(text.encode("utf-8"))
                    info.size = len(data.getvalue())
                elif data is not None:
                    info.size = member.size  # streamed: the weights of a full-size model are GBs
                archive.addfile(info, data)
    return out


# -- tokenizers -------------------------------------------------------------------------------------

def build_sentencepiece(out_dir: Path, vocab_size: int, sentences: Iterable[str]) -> Path:
    """Train a BPE SentencePiece model on ``sentences`` and pad it with filler pieces up to exactly
    ``vocab_size`` pieces. Writes ``tokenizer.model``, ``tokenizer.vocab`` and ``vocab.txt`` (what
    NeMo's BPE tokenizer setup expects in ``tokenizer.dir``); returns the directory."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as sp_pb

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = [s.lower() for s in sentences]
    trained = min(vocab_size, 40)
    model_io = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 8), model_writer=model_io,
                                   vocab_size=trained, model_type="bpe", character_coverage=1.0,
                                   bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, minloglevel=2,
                                   hard_vocab_limit=False)
    proto = sp_pb.ModelProto()
    proto.ParseFromString(model_io.getvalue())
    if len(proto.pieces) > vocab_size:
        raise ModelError(f"tokenizer: cannot build a vocabulary of {vocab_size} pieces "
                         f"(the trained one already has {len(proto.pieces)})")
    existing = {p.piece for p in proto.pieces}
    score = min((p.score for p in proto.pieces), default=0.0)
    index = 0
    while len(proto.pieces) < vocab_size:
        piece = f"\u2581x{index:05d}"
        index += 1
        if piece in existing:
            continue
        score -= 1.0
        proto.pieces.add(piece=piece, score=score, type=sp_pb.ModelProto.SentencePiece.NORMAL)
    (out_dir / "tokenizer.model").write_bytes(proto.SerializeToString())
    (out_dir / "tokenizer.vocab").write_text("".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces))
    (out_dir / "vocab.txt").write_text("".join(f"{p.piece}\n" for p in proto.pieces))
    return out_dir


# -- the mel front end ------------------------------------------------------------------------------

def featurizer_of(preprocessor) -> Any:
    """The ``FilterbankFeatures`` inside an ``AudioToMelSpectrogramPreprocessor``."""
    featurizer = getattr(preprocessor, "featurizer", None)
    if featurizer is None or not hasattr(featurizer, "fb"):
        raise ModelError(f"unsupported NeMo preprocessor {type(preprocessor).__name__}: kiln rewrites "
                         "AudioToMelSpectrogramPreprocessor (FilterbankFeatures) only")
    return featurizer


class MelFrontend(nn.Module):
    """``FilterbankFeatures.forward`` for one fixed-length waveform, as pure traceable ops.

    ``audio [1, N]`` fp32 and ``length [1]`` int32 -> ``mel [1, n_mels, frames]`` fp32 and
    ``mel_length [1]`` int32. Samples at and beyond ``length`` are ignored (zeroed after
    pre-emphasis, like NeMo); frames at and beyond ``mel_length`` are set to ``pad_value``.

    Numerics kept fp16-safe where that costs nothing: the mean and variance of the per-feature
    normalisation are sums of terms already divided by the frame count (NeMo sums first, which can
    exceed the fp16 range over 1,500 frames). The log of tiny power values still differs in fp16
    (the guard 2**-24 is an fp16 subnormal): export the preprocessor with float32 compute precision.
    """

    def __init__(self, featurizer, num_samples: int):
        super().__init__()
        f = featurizer
        if getattr(f, "frame_splicing", 1) != 1:
            raise ModelError("preprocessor: frame_splicing > 1 is not supported")
        if getattr(f, "nb_augmentation_prob", 0.0) > 0.0 and f.training:
            raise ModelError("preprocessor: narrowband augmentation is a training feature")
        normalize = f.normalize
        if normalize not in ("per_feature", None, "NA", "none", False):
            raise ModelError(f"preprocessor: normalize={normalize!r} is not supported "
                             "(per_feature or none)")
        self.normalize = normalize == "per_feature"
        self.n_fft = int(f.n_fft)
        self.hop = int(f.hop_length)
        self.win_length = int(f.win_length)
        self.num_samples = int(num_samples)
        self.preemph = None if f.preemph is None else float(f.preemph)
        self.mag_power = float(f.mag_power)
        self.log = bool(f.log)
        self.log_zero_guard_type = f.log_zero_guard_type
        value = f.log_zero_guard_value
        if isinstance(value, str):
            value = {"tiny": torch.finfo(torch.float32).tiny, "eps": torch.finfo(torch.float32).eps}[value]
        self.log_zero_guard_value = float(value)
        self.pad_value = float(f.pad_value)
        self.exact_pad = bool(getattr(f, "exact_pad", False))
        # center=True pads n_fft//2 zeros each side; exact_pad pads (n_fft - hop)//2, center=False
        self.stft_pad = (self.n_fft - self.hop) // 2 if self.exact_pad else self.n_fft // 2
        self.length_pad = 2 * self.stft_pad  # what get_seq_len adds before subtracting n_fft
        self.frames = 1 + (self.num_samples + 2 * self.stft_pad - self.n_fft) // self.hop
        k = torch.arange(1, self.frames, dtype=torch.int32)
        self.register_buffer("frame_thresholds",
                             (k * self.hop + (self.n_fft - self.length_pad)).unsqueeze(0), persistent=False)
        pad_to = f.pad_to
        if pad_to == "max" or (isinstance(pad_to, int) and pad_to > 0):
            target = int(f.max_length) if pad_to == "max" else \
                self.frames + (pad_to - self.frames % pad_to) % pad_to
            self.out_frames = max(self.frames, target)
        else:
            self.out_frames = self.frames
        # the STFT as a strided conv with a windowed DFT basis, real and imaginary parts split
        # (kiln.export.rewrites); zero padding as torch.stft(center=True, pad_mode="constant")
        self.stft = ConvSTFT(self.n_fft, self.hop, f.window, pad=(self.stft_pad, self.stft_pad),
                             pad_mode="constant")
        self.n_bins = self.stft.bins
        self.register_buffer("fb", f.fb.detach().to(torch.float32).clone())  # [1, n_mels, n_bins]
        self.n_mels = int(self.fb.shape[1])

    def output_length(self, length: torch.Tensor) -> torch.Tensor:
        """NeMo's ``get_seq_len``, ``floor((len + 2*pad - n_fft) / hop)`` (0 for len 0), int32.

        Computed as a count of frame thresholds ``k*hop + n_fft - 2*pad <= len`` (k = 1..frames-1)
        instead of a division: coremltools lowers an integer ``floor_div`` through floats, and with
        fp16 compute precision 240,000 samples overflow (fp16 max 65,504; integers above 2,048 are
        not even exact). Comparisons of int32 tensors stay int32. Lengths past the buffer count as
        the buffer's length.
        """
        reached = self.frame_thresholds <= length.to(torch.int32).unsqueeze(1)   # [B, frames - 1]
        return reached.to(torch.int32).sum(dim=-1).to(torch.int32)

    def forward(self, audio: torch.Tensor, length: torch.Tensor):
        length = length.to(torch.int32)
        mel_length = self.output_length(length)
        x = audio
        if self.preemph is not None:
            x = torch.cat([x[:, :1], x[:, 1:] - self.preemph * x[:, :-1]], dim=1)
            sample_index = torch.arange(self.num_samples, dtype=torch.int32).unsqueeze(0)
            x = x * (sample_index < length.unsqueeze(1)).to(x.dtype)
        real, imag = self.stft(x)                                          # [1, bins, frames] each
        power = real * real + imag * imag
        if self.mag_power != 2.0:
            power = torch.pow(torch.sqrt(power), self.mag_power / 1.0)
        mel = torch.matmul(self.fb, power)                                # [1, n_mels, frames]
        if self.log:
            if self.log_zero_guard_type == "add":
                mel = torch.log(mel + self.log_zero_guard_value)
            else:
                mel = torch.log(torch.clamp(mel, min=self.log_zero_guard_value))
        frame_index = torch.arange(self.frames, dtype=torch.int32).unsqueeze(0)
        valid = (frame_index < mel_length.unsqueeze(1)).to(mel.dtype).unsqueeze(1)   # [1, 1, frames]
        if self.normalize:
            count = valid.sum(dim=2, keepdim=True)
            inv_count = 1.0 / torch.clamp(count, min=1.0)
            mean = (mel * valid * inv_count).sum(dim=2, keepdim=True)
            centered = (mel - mean) * valid
            # unbiased variance; NeMo turns the NaN of a single frame into std 0
            inv_dof = torch.where(count > 1.0, 1.0 / torch.clamp(count - 1.0, min=1.0), torch.zeros_like(count))
            std = torch.sqrt((centered * centered * inv_dof).sum(dim=2, keepdim=True)) + NEMO_NORMALIZE_EPS
            mel = (mel - mean) / std
        mel = mel * valid + self.pad_value * (1.0 - valid)
        if self.out_frames > self.frames:
            mel = F.pad(mel, (0, self.out_frames - self.frames), value=self.pad_value)
        return mel, mel_length.to(torch.int32)
