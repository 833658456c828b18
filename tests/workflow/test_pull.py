"""kiln.workflow.pull's checks on crafted lock files (the end-to-end cases, in separate processes against
a real S3 server, are in test_dvc_s3.py)."""

from __future__ import annotations

import pytest

from kiln.cli import main
from kiln.workflow.pull import PullError, recorded_outputs


def test_the_recorded_outputs_of_the_build_stage(tmp_path):
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  build:\n    cmd: snakemake --cores all all\n"
                                       "    outs:\n    - path: results\n      md5: 0123456789abcdef0123456789abcdef.dir\n")
    assert recorded_outputs(tmp_path) == {"results": "0123456789abcdef0123456789abcdef.dir"}


@pytest.mark.parametrize("lock, phrase", [
    (None, "dvc.lock is missing: this checkout records no build"),
    ("schema: '2.0'\nstages: {}\n", "has no recorded outputs of stage 'build'"),
    ("schema: '2.0'\nstages:\n  build:\n    outs:\n    - path: results\n", "has no recorded outputs"),
    ("stages: [unclosed\n", "not a DVC lock file"),
])
def test_a_lock_without_a_recorded_build_says_what_to_do(tmp_path, lock, phrase):
    if lock is not None:
        (tmp_path / "dvc.lock").write_text(lock)
    with pytest.raises(PullError) as caught:
        recorded_outputs(tmp_path)
    message = str(caught.value)
    assert phrase in message and "\n" not in message
    if "not a DVC lock" not in message:
        assert "make run" in message and "--force" not in message


def test_the_cli_reports_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert main(["pull", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kiln: error: PullError: nothing to pull: ")
    assert main(["pull", "--root", str(tmp_path / "elsewhere")]) == 2
    assert "no dvc.yaml here" in capsys.readouterr().err


def test_a_lock_outside_a_dvc_repository_is_one_line(tmp_path, capsys):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  build:\n    outs:\n    - path: results\n"
                                       "      md5: 0123456789abcdef0123456789abcdef.dir\n")
    assert main(["pull", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not inside of a DVC repository" in err[0]
