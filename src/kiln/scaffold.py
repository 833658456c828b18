"""``kiln new-model TASK NAME``: scaffold a model family module and its config block.

Adding a model to kiln means one module in ``src/kiln/models/`` and one block in ``config.yaml``.
The scaffold writes both, as a small but working model of the task's usual shape (random-initialised,
labelled synthetic), so ``snakemake all_<name>`` builds it at once; then replace the network and
the source with the real ones.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import yaml

from kiln.errors import KilnError


class ScaffoldError(KilnError):
    """The scaffold cannot be written (bad name, existing module, unreadable config)."""


MODULE = '''"""{title}: scaffolded by `kiln new-model {task} {name}`. Replace the network with the real one.

Components and their contracts are declared in config.yaml (models.{name}); this module builds a
traceable wrapper for each, loads the source checkpoint, and can make a random-initialised one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from kiln.config import ComponentConfig
from kiln.errors import SourceError
from kiln.models.base import ModelFamily
from kiln.sources import SourceRecord

ARCHITECTURES = {{"default": {architecture}}}


{network}


class {cls}Family(ModelFamily):
    name = "{name}"
    components = ("{component}",)

    def load_source(self, record: SourceRecord) -> nn.Module:
        path = record.file("checkpoint")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            model = {cls}Net(**checkpoint["architecture"])
            model.load_state_dict(checkpoint["state_dict"])
        except (RuntimeError, KeyError, TypeError, EOFError) as exc:
            raise SourceError(f"{{path}}: not a {name} checkpoint: {{exc}}") from exc
        return model.eval()

    def build_component(self, source: Any, component: ComponentConfig) -> nn.Module:
        self.check_component(component)
        return source

    def build_random(self, architecture: str, *, seed: int, overrides: Mapping[str, Any],
                     out_dir: Path) -> Path:
        torch.manual_seed(seed)
        arch = {{**ARCHITECTURES[architecture], **overrides}}
        model = {cls}Net(**arch)
        path = Path(out_dir) / f"{name}-{{architecture}}-seed{{seed}}.pt"
        torch.save({{"architecture": arch, "state_dict": model.state_dict()}}, path)
        return path


FAMILY = {cls}Family()
'''

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
    ),
}


def _class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def config_block(task: str, name: str) -> dict:
    spec = NETWORKS[task]
    dtype_in = "int32" if task == "tts" else "float32"
    return {name: {
        "family": name,
        "task": task,
        "synthetic": True,
        "source": {"kind": "random", "architecture": "default", "seed": 0},
        "components": {spec["component"]: {
            "description": f"scaffolded {spec['title'].lower()} component",
            "inputs": {k: {"shape": v, "dtype": dtype_in if i == 0 else "float32"}
                       for i, (k, v) in enumerate(spec["inputs"].items())},
            "outputs": {k: {"shape": v, "dtype": "float32"} for k, v in spec["outputs"].items()},
        }},
    }}


def new_model(task: str, name: str, root: Path, config_path: Path) -> tuple[Path, str]:
    """Write ``src/kiln/models/<name>.py`` under ``root`` and append the model's block to the config."""
    if task not in NETWORKS:
        raise ScaffoldError(f"unknown task '{task}' (one of: {', '.join(NETWORKS)})")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name) or name == "base":
        raise ScaffoldError(f"model name '{name}' must be a lower-case identifier (a-z, 0-9, _)")
    module = root / "src" / "kiln" / "models" / f"{name}.py"
    if module.exists():
        raise ScaffoldError(f"{module} already exists")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScaffoldError(f"{config_path}: cannot read the config: {exc}") from exc
    if name in (config.get("models") or {}):
        raise ScaffoldError(f"{config_path}: models.{name} already exists")
    spec = NETWORKS[task]
    cls = _class_name(name)
    text = MODULE.format(title=spec["title"], task=task, name=name, cls=cls, component=spec["component"],
                         architecture=spec["architecture"], network=spec["network"].format(cls=cls))
    module.write_text(text)
    block = yaml.safe_dump(config_block(task, name), sort_keys=False, default_flow_style=None)
    indented = "".join(f"  {line}\n" for line in block.splitlines())
    existing = config_path.read_text()
    lines = existing.rstrip("\n").splitlines()
    # append under `models:`, which is the config's last top-level key
    last_top = [line for line in lines if line and not line[0].isspace() and not line.startswith("#")]
    if not last_top or not last_top[-1].startswith("models:"):
        return module, indented  # caller prints the block for the user to paste
    config_path.write_text(existing.rstrip("\n") + "\n" + indented)
    return module, ""


def _command(args) -> int:
    module, manual = new_model(args.task, args.name, Path(args.root), Path(args.config))
    print(f"wrote {module}")
    if manual:
        print(f"add this block under `models:` in {args.config}:\n{manual}")
    else:
        print(f"added models.{args.name} to {args.config}")
    print(f"build it: snakemake --cores 2 all_{args.name}")
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("new-model", help="scaffold a model family module and config block")
    parser.add_argument("task", choices=sorted(NETWORKS))
    parser.add_argument("name")
    parser.add_argument("--root", default=".", help="the kiln checkout (default: .)")
    parser.add_argument("--config", default="config.yaml")
    parser.set_defaults(func=_command)
