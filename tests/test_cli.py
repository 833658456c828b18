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
    assert "models.silero_vad.task" in err and "unknown task 'ocr'" in err and "speaker_embedding" in err
    assert main(["check-config", str(repo / "config.yaml")]) == 0


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "compile" in result.stdout


# --- predict never writes over what it reads (issue 27, item 6) ---------------------------------------

def test_predict_refuses_an_output_that_is_one_of_its_inputs(tmp_path):
    """`kiln predict m.mlpackage --inputs in.npz --out in.npz` replaced the inputs with the outputs.
    Every spelling of an input (the same path, without the .npz numpy appends, another path through
    `..` or a symlink, a hard link, a file inside the model bundle) is refused: exit 2, one line, the
    files untouched."""
    import numpy as np
    from coremltools.converters.mil import Builder as mb

    from tests.clirun import assert_one_line_error, kiln, snapshot
    from tests.mil.milprog import save_program

    package = save_program(lambda x: [mb.relu(x=x)], [("x", (2, 3), np.float32)], tmp_path / "model", "iOS17")
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    np.savez(work / "in.npz", x=np.arange(-3, 3, dtype=np.float32).reshape(2, 3))
    (work / "link.npz").symlink_to(work / "in.npz")
    (work / "hard.npz").hardlink_to(work / "in.npz")
    cases = {"same path": "in.npz", ".npz appended": "in", "through ..": "sub/../in.npz",
             "symlink": "link.npz", "hard link": "hard.npz", "inside the model": str(package / "out.npz")}
    before = snapshot(tmp_path)
    for name, out in cases.items():
        result = kiln("predict", str(package), "--inputs", "in.npz", "--out", out, cwd=work, timeout=120)
        which = "lies inside the model" if name == "inside the model" else "is --inputs in.npz"
        assert_one_line_error(result, "OutputError", f"--out {out}: ", which, "choose another path")
        assert snapshot(tmp_path) == before, name
    written = kiln("predict", str(package), "--inputs", "in.npz", "--out", "out", cwd=work, timeout=120)
    assert written.returncode == 0, written.stderr
    with np.load(work / "out.npz") as out, np.load(work / "in.npz") as inputs:
        assert list(inputs.files) == ["x"] and np.array_equal(list(out.values())[0], np.maximum(inputs["x"], 0))
