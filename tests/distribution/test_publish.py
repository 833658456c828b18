"""Staging and uploading carry regular files only: a link or special file is refused by name."""

from __future__ import annotations

import os
import subprocess

import pytest

from kiln.distribution.publish import PublishError, upload_staged


def test_a_staged_folder_holding_a_link_is_never_uploaded(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "k", "GIT_AUTHOR_EMAIL": "k@example.invalid",
           "GIT_COMMITTER_NAME": "k", "GIT_COMMITTER_EMAIL": "k@example.invalid"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=checkout, check=True, env=env)
    folder = tmp_path / "publish" / "m"
    (folder / "kiln").mkdir(parents=True)
    (folder / "kiln" / "provenance.json").write_text("{}")
    host = tmp_path / "hostname"
    host.write_text("a host file\n")
    (folder / "plots").mkdir()
    (folder / "plots" / "leak.png").symlink_to(host)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # nothing listens: a request would fail
    with pytest.raises(PublishError) as err:
        upload_staged(folder, "kiln-test/m", checkout=checkout)
    assert str(err.value) == (f"{folder}: refusing to upload it: plots/leak.png (a symbolic link to {host}); kiln "
                              f"ships only the regular files its jobs wrote (remove these)")
    os.mkfifo(folder / "pipe")
    (folder / "plots" / "leak.png").unlink()
    with pytest.raises(PublishError, match=r"refusing to upload it: pipe \(not a regular file\)"):
        upload_staged(folder, "kiln-test/m", checkout=checkout)
