"""``kiln new-model TEMPLATE NAME``: scaffold a model family package and its config block.

Adding a model to kiln means one package in ``src/kiln/models/`` (its parts: ``checkpoint``,
``build``, ``feeds``, ``judge``, assembled in ``__init__``) and one block in ``config.yaml`` --
or, for a plain model (one network, a fixed contract), the block alone (template ``plain``: family
``plain``, a traced random network as its source). The family templates are ``vad``, ``stt``, ``tts``
and ``generic`` (any task; ``--task`` names it). The scaffold writes both, as a small but working model of the task's usual shape (random-initialised,
labelled synthetic) with validation feeds of its modality (streamed speech, mel frames, token ids),
so ``snakemake all_<name>`` builds it through every stage at once; then replace the network and the
source with the real ones.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import yaml

from kiln.foundation import yamlio
from kiln.foundation.errors import KilnError


class ScaffoldError(KilnError):
    """The scaffold cannot be written (bad name, existing module, unreadable config)."""


#: the files of a scaffolded family package (``src/kiln/models/<name>/``), by part
#: (kiln.family.PARTS): the workflow's code stamps follow them, so an edit to a metric (judge.py)
#: re-runs parity and the summaries, not the export, and an edit to the wrapper (build.py) no fetch
PACKAGE = {
    "__init__.py": '''"""{title}: scaffolded by `kiln new-model {task} {name}`. Replace the network with the real one.

The family is its list of components (kiln.family.spec), assembled from its parts: ``checkpoint``
(random-initialised checkpoints), ``build`` (load, facts, the traceable wrapper), ``feeds`` (the
validation inputs) and ``judge`` (task metrics, plots). The contract (names, dtypes, shapes) is
stated once, here: axes may be expressions of the facts and the entry's options (kiln.family.contract);
the prepare job resolves it (results/{name}/prepared/contracts.json). config.yaml (models.{name})
keeps only the knobs: options, precision, tolerances, quantization, the outputs' kind.
"""

from __future__ import annotations

from kiln.family.contract import Contract, f32, i32  # noqa: F401
from kiln.family.spec import ComponentSpec, FamilySpec, Metric, PlotSeries, StatePair, declared  # noqa: F401
from kiln.models.{name} import build, checkpoint, feeds, judge

CONTRACT = Contract(
    inputs=({contract_inputs}),
    outputs=({contract_outputs}))

FAMILY = FamilySpec(
    name="{name}", load=build.load, facts=build.facts, build_random=checkpoint.build_random,
    components=(
        ComponentSpec(
            "{component}", **declared(CONTRACT),
            wrapper=build.wrapper,
            feeds=feeds.{feeds},
            state={state},
            metrics=(Metric("{metric}", judge.{metric}),),
            plot={plot},
        ),
    ),
)
''',
    "net.py": '''"""{title}: the network (shared by the checkpoint builder and the build part)."""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURES = {{"default": {architecture}}}


{network}
''',
    "checkpoint.py": '''"""{title}: random-initialised checkpoints (the fetch job of a ``random`` source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from kiln.models.{name}.net import ARCHITECTURES, {cls}Net


def build_random(architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir: Path) -> Path:
    torch.manual_seed(seed)
    arch = {{**ARCHITECTURES[architecture], **overrides}}
    model = {cls}Net(**arch)
    path = Path(out_dir) / f"{name}-{{architecture}}-seed{{seed}}.pt"
    torch.save({{"architecture": arch, "state_dict": model.state_dict()}}, path)
    return path
''',
    "build.py": '''"""{title}: the build part (the prepare job): load the checkpoint, its facts, the traceable wrapper."""

from __future__ import annotations

import torch
from torch import nn

from kiln.foundation.errors import SourceError
from kiln.models.{name}.net import {cls}Net
from kiln.sources import SourceRecord


def load(record: SourceRecord) -> nn.Module:
    path = record.file("checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = {cls}Net(**checkpoint["architecture"])
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, EOFError) as exc:
        raise SourceError(f"{{path}}: not a {name} checkpoint: {{exc}}") from exc
    return model.eval()


def facts(model: nn.Module) -> dict:
    return {{}}


def wrapper(model: nn.Module, component, facts) -> nn.Module:
    return model
''',
    "feeds.py": '''"""{title}: the validation inputs (the reference job)."""

from __future__ import annotations

import numpy as np

from kiln.family.spec import Feeds
from kiln.models.{name}.net import ARCHITECTURES  # noqa: F401


{feeds_code}
''',
    "judge.py": '''"""{title}: the judging part (parity and the summaries): task metrics and plots."""

from __future__ import annotations

import numpy as np


{judge_code}
''',
}


NETWORKS = {
    "vad": dict(
        title="Voice activity detector",
        component="frame",
        architecture='{"frame": 576, "hidden": 64}',
        network='''class {cls}Net(nn.Module):
    """audio [1, frame] + LSTM state -> speech probability [1, 1], new state."""

    def __init__(self, frame: int, hidden: int):
        super().__init__()
        self.encode = nn.Linear(frame, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, audio, hidden_state, cell_state):
        h, c = self.cell(torch.relu(self.encode(audio)), (hidden_state, cell_state))
        return torch.sigmoid(self.head(h)), h, c''',
        inputs={"audio": [1, 576], "hidden_state": [1, 64], "cell_state": [1, 64]},
        outputs={"probability": [1, 1], "new_hidden_state": [1, 64], "new_cell_state": [1, 64]},
        feeds="speech_frames",
        state='(StatePair("hidden_state", "new_hidden_state"), StatePair("cell_state", "new_cell_state"))',
        metric="decisions",
        plot='PlotSeries("speech probability", judge.probabilities)',
        feeds_code='''def speech_frames(ctx, component) -> Feeds:
    """10 s of real speech (espeak-ng, mixed with silence and noise), one frame per step."""
    frame = component.inputs[0].shape[-1]
    audio = ctx.speech(10.0)
    steps = [{{"audio": audio[None, i:i + frame].astype(np.float32)}}
             for i in range(0, audio.size - frame + 1, frame)]
    return Feeds(steps, "espeak-ng speech mixed with silence and noise, 10 s, streamed", frame / 16000)''',
        judge_code='''def probabilities(steps) -> np.ndarray:
    return np.array([float(np.ravel(s["probability"])[0]) for s in steps])


def decisions(reference, candidate, facts) -> dict:
    p, q = probabilities(reference), probabilities(candidate)
    return {{"decision_agreement": float(np.mean((p > 0.5) == (q > 0.5)))}}''',
    ),
    "stt": dict(
        title="Speech recogniser",
        component="encoder",
        architecture='{"mels": 80, "d_model": 96, "vocab": 129}',
        network='''class {cls}Net(nn.Module):
    """mel [1, mels, 200] -> token logits [1, 50, vocab] (4x subsampling)."""

    def __init__(self, mels: int, d_model: int, vocab: int):
        super().__init__()
        self.subsample = nn.Sequential(
            nn.Conv1d(mels, d_model, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv1d(d_model, d_model, 3, stride=2, padding=1), nn.SiLU())
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab)

    def forward(self, mel):
        x = self.subsample(mel).transpose(1, 2)
        return (self.out(self.norm(x)),)''',
        inputs={"mel": [1, 80, 200]},
        outputs={"logits": [1, 50, 129]},
        feeds="mel_frames",
        state="()",
        metric="argmax_agreement",
        plot="None",
        feeds_code='''def mel_frames(ctx, component) -> Feeds:
    """Log power spectra of real speech (25 ms windows, 10 ms hop) pooled into the contract's bands."""
    bands, frames = component.inputs[0].shape[1:]
    audio = ctx.speech(frames * 0.01 + 0.025)
    spectra = [np.abs(np.fft.rfft(audio[i * 160:i * 160 + 400] * np.hanning(400))) ** 2 for i in range(frames)]
    pooled = np.stack([[band.mean() for band in np.array_split(s, bands)] for s in spectra], axis=1)
    mel = np.log(pooled + 1e-6).astype(np.float32)[None]
    return Feeds([{{"mel": mel}}], f"log spectra of {{frames}} frames of espeak-ng speech")''',
        judge_code='''def argmax_agreement(reference, candidate, facts) -> dict:
    ref = np.concatenate([np.asarray(s["logits"]).argmax(-1).ravel() for s in reference])
    out = np.concatenate([np.asarray(s["logits"]).argmax(-1).ravel() for s in candidate])
    return {{"argmax_agreement": float(np.mean(ref == out))}}''',
    ),
    "tts": dict(
        title="Text to speech",
        component="synthesizer",
        architecture='{"vocab": 64, "channels": 64, "hop": 64}',
        network='''class {cls}Net(nn.Module):
    """token ids [1, 32] (int32) -> waveform [1, 32 * hop] in [-1, 1]."""

    def __init__(self, vocab: int, channels: int, hop: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, channels)
        self.mix = nn.Conv1d(channels, channels, 5, padding=2)
        self.upsample = nn.ConvTranspose1d(channels, 1, hop, stride=hop)

    def forward(self, input_ids):
        x = self.embed(input_ids.long()).transpose(1, 2)
        return (torch.tanh(self.upsample(torch.relu(self.mix(x)))).squeeze(1),)''',
        inputs={"input_ids": [1, 32]},
        outputs={"audio": [1, 2048]},
        feeds="token_ids",
        state="()",
        metric="waveform_correlation",
        plot="None",
        feeds_code='''def token_ids(ctx, component) -> Feeds:
    """Four fixed token sequences (seeded), one per step."""
    rng = np.random.default_rng(0)
    vocab = ARCHITECTURES["default"]["vocab"]
    steps = [{{"input_ids": rng.integers(0, vocab, size=component.inputs[0].shape).astype(np.int32)}}
             for _ in range(4)]
    return Feeds(steps, "4 seeded token sequences")''',
        judge_code='''def waveform_correlation(reference, candidate, facts) -> dict:
    ref = np.concatenate([np.ravel(s["audio"]) for s in reference]).astype(np.float64)
    out = np.concatenate([np.ravel(s["audio"]) for s in candidate]).astype(np.float64)
    return {{"waveform_correlation": float(np.corrcoef(ref, out)[0, 1])}}''',
    ),
    "generic": dict(
        title="A model of any task",
        component="model",
        architecture='{"channels": 16, "hidden": 64}',
        network='''class {cls}Net(nn.Module):
    """features [1, channels, 100] -> features [1, hidden, 100]."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.mix = nn.Conv1d(channels, hidden, 3, padding=1)
        self.out = nn.Conv1d(hidden, hidden, 1)

    def forward(self, features):
        return (self.out(torch.relu(self.mix(features))),)''',
        inputs={"features": [1, 16, 100]},
        outputs={"output": [1, 64, 100]},
        feeds="random_features",
        state="()",
        metric="cosine",
        plot="None",
        feeds_code='''def random_features(ctx, component) -> Feeds:
    """Eight seeded random inputs in [-1, 1]; replace with what the model really sees."""
    rng = np.random.default_rng(0)
    steps = [{{"features": rng.uniform(-1, 1, size=component.inputs[0].shape).astype(np.float32)}}
             for _ in range(8)]
    return Feeds(steps, "8 seeded uniform random inputs in [-1, 1]")''',
        judge_code='''def cosine(reference, candidate, facts) -> dict:
    """A task metric of your own (the output's declared kind in config.yaml adds kiln's stock ones)."""
    ref = np.concatenate([np.ravel(s["output"]) for s in reference]).astype(np.float64)
    out = np.concatenate([np.ravel(s["output"]) for s in candidate]).astype(np.float64)
    return {{"cosine": float(ref @ out / (np.linalg.norm(ref) * np.linalg.norm(out) + 1e-30))}}''',
    ),
}

#: what each template's model does (the config block's ``task`` label; ``--task`` overrides it)
TASK_LABELS = {"vad": "vad", "stt": "stt", "tts": "tts", "generic": "feature_extraction",
               "plain": "feature_extraction"}
#: every template: the family-package ones, and ``plain`` (a config block alone, no Python)
TEMPLATES = (*NETWORKS, "plain")

#: family ``plain``: the network file the scaffold writes so the block builds at once (a traced
#: random two-layer network); replace ``source`` and the contract with your model's
PLAIN_CONTRACT = {"inputs": {"features": [1, 16, 100]}, "outputs": {"output": [1, 64, 100]}}


class _PlainNet:
    """Built lazily (torch is heavy): features [1, 16, 100] -> [1, 64, 100]."""

    @staticmethod
    def write(path: Path, seed: int = 0) -> None:
        import torch
        from torch import nn

        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv1d(16, 64, 3, padding=1), nn.ReLU(), nn.Conv1d(64, 64, 1)).eval()
        traced = torch.jit.trace(net, torch.zeros(*PLAIN_CONTRACT["inputs"]["features"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(traced, str(path))


def plain_block(name: str, label: str, weights: str) -> dict:
    return {name: {
        "family": "plain",
        "task": label,
        "synthetic": True,
        "source": {"kind": "path", "path": weights},
        "network": {"kind": "torchscript"},
        "quantize": {"strategies": ["int8_per_channel"]},
        "components": {"model": {
            "description": "scaffolded plain model: replace source, network and this contract with yours",
            "inputs": {k: {"shape": v, "dtype": "float32"} for k, v in PLAIN_CONTRACT["inputs"].items()},
            "outputs": {k: {"shape": v, "dtype": "float32", "kind": "features"}
                        for k, v in PLAIN_CONTRACT["outputs"].items()},
            "feeds": {"features": {"modality": "random", "low": -1, "high": 1, "steps": 8}},
        }},
    }}


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _tensors(shapes: dict, first: str) -> str:
    """``f32("audio", 1, 576), ...``: the contract's tensors as the package states them (the first
    input's dtype is ``first``, the others float32)."""
    return "".join(f'{first if i == 0 else "f32"}("{k}", {", ".join(map(str, v))}), '
                   for i, (k, v) in enumerate(shapes.items())).rstrip(" ")


def config_block(task: str, name: str, label: str | None = None) -> dict:
    """The model's knobs: the family package states the contract (its shapes are resolved by the
    prepare job), the block only what each output is (its ``kind``)."""
    spec = NETWORKS[task]
    return {name: {
        "family": name,
        "task": label or TASK_LABELS[task],
        "synthetic": True,
        "source": {"kind": "random", "architecture": "default", "seed": 0},
        "components": {spec["component"]: {
            "description": f"scaffolded {spec['title'].lower()} component",
            **({"outputs": kinds} if (kinds := {k: {"kind": OUTPUT_KINDS[task][k]} for k in spec["outputs"]
                                                 if k in OUTPUT_KINDS[task]}) else {}),
        }},
    }}


#: what each template's outputs are (kiln.validate.kinds picks their parity metrics and quantization score)
OUTPUT_KINDS = {"vad": {"probability": "probability", "new_hidden_state": "state", "new_cell_state": "state"},
                "stt": {"logits": "logits"}, "tts": {"audio": "audio"}, "generic": {"output": "features"}}


def new_model(task: str, name: str, root: Path, config_path: Path, label: str | None = None) -> tuple[Path, str]:
    """Write the package ``src/kiln/models/<name>/`` under ``root`` and append the model's block to the config
    (template ``plain``: no module; a traced random network under ``weights/`` and a block of family
    ``plain``). ``label`` is the block's ``task`` (default: the template's, see :data:`TASK_LABELS`)."""
    if task not in TEMPLATES:
        raise ScaffoldError(f"unknown template '{task}' (one of: {', '.join(TEMPLATES)})")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name) or name in ("plain", "records"):
        raise ScaffoldError(f"model name '{name}' must be a lower-case identifier (a-z, 0-9, _)")
    if label is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", label):
        raise ScaffoldError(f"task label '{label}' must be a lower-case identifier (a-z, 0-9, _)")
    module = root / "src" / "kiln" / "models" / name
    if task == "plain":
        module = root / "weights" / f"{name}.jit"
    if module.exists():
        raise ScaffoldError(f"{module} already exists")
    try:
        config = yamlio.read(config_path) or {}
    except yamlio.YamlFileError as exc:
        raise ScaffoldError(f"{config_path}: cannot read the config: {exc.reason}") from None
    if not isinstance(config, dict):
        raise ScaffoldError(f"{config_path}: cannot read the config: not a mapping")
    if name in (config.get("models") or {}):
        raise ScaffoldError(f"{config_path}: models.{name} already exists")
    if task == "plain":
        _PlainNet.write(module)
        return module, _append_block(config_path, plain_block(name, label or TASK_LABELS[task],
                                                              str(module.relative_to(root))))
    spec = NETWORKS[task]
    cls = _class_name(name)
    fields = dict(title=spec["title"], task=task, name=name, cls=cls, component=spec["component"],
                  architecture=spec["architecture"], network=spec["network"].format(cls=cls),
                  contract_inputs=_tensors(spec["inputs"], "i32" if task == "tts" else "f32"),
                  contract_outputs=_tensors(spec["outputs"], "f32"), feeds=spec["feeds"],
                  state=spec["state"], metric=spec["metric"], plot=spec["plot"],
                  feeds_code=spec["feeds_code"].format(), judge_code=spec["judge_code"].format())
    texts = {file: template.format(**fields) for file, template in PACKAGE.items()}
    module.mkdir(parents=True)
    for file, text in texts.items():
        (module / file).write_text(text)
    return module, _append_block(config_path, config_block(task, name, label))


def _append_block(config_path: Path, data: dict) -> str:
    """Append ``data`` under ``models:`` (the config's last top-level key); else return it as text
    for the user to paste."""
    block = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    indented = "".join(f"  {line}\n" for line in block.splitlines())
    existing = config_path.read_text()
    lines = existing.rstrip("\n").splitlines()
    # append under `models:`, which is the config's last top-level key
    last_top = [line for line in lines if line and not line[0].isspace() and not line.startswith("#")]
    if not last_top or not last_top[-1].startswith("models:"):
        return indented  # caller prints the block for the user to paste
    config_path.write_text(existing.rstrip("\n") + "\n" + indented)
    return ""


def _command(args) -> int:
    module, manual = new_model(args.task, args.name, Path(args.root), Path(args.config), label=args.label)
    print(f"wrote {module}")
    if manual:
        print(f"add this block under `models:` in {args.config}:\n{manual}")
    else:
        print(f"added models.{args.name} to {args.config}")
    print(f"build it: snakemake --cores 2 all_{args.name}")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("new-model", help="scaffold a model family package and config block")
    parser.add_argument("task", choices=sorted(TEMPLATES), metavar="TEMPLATE",
                        help="vad, stt, tts: a family package of that task's shape; generic: a family "
                             "package of any task; plain: a config block alone (no Python)")
    parser.add_argument("--task", dest="label", default=None,
                        help="the model's task label (default: the template's; any label of kiln.tasks, "
                             "or add one under `tasks:` in the config)")
    parser.add_argument("name")
    parser.add_argument("--root", default=".", help="the kiln checkout (default: .)")
    parser.add_argument("--config", default="config.yaml")
    parser.set_defaults(func=_command)
