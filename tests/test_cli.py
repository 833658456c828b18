"""The `kiln` command: subcommands are registered, errors print one line naming the culprit."""

from __future__ import annotations

import subprocess
import sys

import yaml

from kiln.cli import build_parser, main


def test_every_subcommand_is_registered():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"predict", "inspect", "ops", "compile", "new-model", "check-config", "pull"} <= set(commands)


def test_check_config_names_the_bad_key(tmp_path, repo, capsys):
    data = yaml.safe_load((repo / "config.yaml").read_text())
    data["models"]["silero_vad"]["task"] = "ocr"
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "models.silero_vad.task" in err and "'ocr' is not one of" in err
    assert main(["check-config", str(repo / "config.yaml")]) == 0


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "compile" in result.stdout
