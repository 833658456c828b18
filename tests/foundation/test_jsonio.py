"""Recorded JSON and a published folder's settings are read within bounds: `kiln verify` and `kiln
check` in separate processes against crafted folders exit 2 with one line naming the file and key,
before anything runs, and change nothing (issue 27, item 6)."""

from __future__ import annotations

import json

import pytest

from kiln.foundation import jsonio
from tests.clirun import REPO, assert_one_line_error, kiln, snapshot

PROVENANCE = {"schema_version": 1, "model": "silero_vad", "results_dir": "results", "names": {"unified": "unified"},
              "kiln": {"version": "0", "git_commit": None, "checkout_commit": None},
              "artifacts": [{"path": "unified.mlmodelc", "source": "silero_vad/unified.mlmodelc", "kind": "bundle",
                             "component": "unified", "strategy": None}]}


def _deep(levels: int) -> str:
    return '{"model": ' + "[" * levels + "]" * levels + "}"


def _bomb() -> str:
    return "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '1'] * 9)}]\n" for i in range(9))


def _edit(key, value):
    def edit(folder):
        data = json.loads((folder / "kiln/provenance.json").read_text())
        target = data
        *parents, last = key
        for part in parents:
            target = target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
        (folder / "kiln/provenance.json").write_text(json.dumps(data))
    return edit


def _write(rel, content):
    def edit(folder):
        (folder / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    return edit


VERIFY_CASES = {
    # name: (edit of a well-formed folder, file named, words of the one-line error)
    "provenance-not-json": (_write("kiln/provenance.json", '{"model": "silero_vad",\n'), "kiln/provenance.json",
                            ["not valid JSON: Expecting property name enclosed in double quotes: line 2"]),
    "provenance-not-utf8": (_write("kiln/provenance.json", b'{"model": "\xff"}'), "kiln/provenance.json",
                            ["not UTF-8 text (byte 0xff at offset 11)"]),
    "provenance-missing-artifacts": (_edit(["artifacts"], KeyError), "kiln/provenance.json",
                                     ["at '<root>': 'artifacts' is a required property"]),
    "provenance-artifact-without-source": (_edit(["artifacts", 0, "source"], KeyError), "kiln/provenance.json",
                                           ["at 'artifacts.0': 'source' is a required property"]),
    "provenance-kiln-not-a-mapping": (_edit(["kiln"], "abc"), "kiln/provenance.json",
                                      ["at 'kiln': 'abc' is not of type 'object'"]),
    "model-dotdot": (_edit(["model"], "../x"), "kiln/provenance.json",
                     ["at 'model': '../x' does not match '^[a-z][a-z0-9_]*$'"]),
    "provenance-nested-100000": (_write("kiln/provenance.json", _deep(100_000)), "kiln/provenance.json",
                                 ["nested deeper than 64 levels"]),
    "provenance-nested-500": (_write("kiln/provenance.json", _deep(500)), "kiln/provenance.json",
                              ["nested deeper than 64 levels"]),
    "record-nested-900": (_write("kiln/records/metadata.json", _deep(900)), "kiln/records/metadata.json",
                          ["nested deeper than 64 levels"]),
    "config-alias-bomb": (_write("kiln/config.yaml", _bomb()), "kiln/config.yaml",
                          ["expands to more than 1,000,000 nodes"]),
    "config-nested-20000": (_write("kiln/config.yaml", "x: " + "[" * 20_000 + "]" * 20_000), "kiln/config.yaml",
                            ["nested deeper than 64 levels"]),
    "config-not-utf8": (_write("kiln/config.yaml", b"models: {\xc3\x28}"), "kiln/config.yaml",
                        ["not UTF-8 text (byte 0xc3 at offset 9, line 1)"]),
}


def _published(folder):
    (folder / "kiln/records").mkdir(parents=True)
    (folder / "kiln/provenance.json").write_text(json.dumps(PROVENANCE))
    (folder / "kiln/config.yaml").write_bytes((REPO / "config.yaml").read_bytes())
    (folder / "kiln/toolchain.lock").write_text("numpy==0\n")
    (folder / "kiln/records/source.json").write_text('{"files": []}')
    (folder / "kiln/records/metadata.json").write_text('{"toolchain": {"kiln": {"version": "0"}}}')


@pytest.mark.parametrize("case", sorted(VERIFY_CASES))
def test_verify_refuses_a_malformed_published_folder_in_one_line(tmp_path, case):
    """No --workdir, so a model name like ../x would have named the scratch directory (before: a
    FileNotFoundError from mkdtemp; KeyError, JSONDecodeError, RecursionError tracebacks)."""
    edit, rel, words = VERIFY_CASES[case]
    folder = tmp_path / "published"
    _published(folder)
    edit(folder)
    scratch = tmp_path / "tmp"   # where verify would make its scratch directory
    scratch.mkdir()
    before = snapshot(tmp_path)
    result = kiln("verify", str(folder), cwd=tmp_path, timeout=60, env={"TMPDIR": str(scratch)})
    assert_one_line_error(result, "VerifyError", f"{folder / rel}: ", *words)
    assert snapshot(tmp_path) == before   # nothing written, no scratch directory


@pytest.mark.parametrize("levels", [500, 100_000])
def test_check_refuses_a_deeply_nested_record_in_one_line(tmp_path, levels):
    model = tmp_path / "results" / "m"
    model.mkdir(parents=True)
    (model / "export").mkdir()
    (model / "export" / "unified.json").write_text(_deep(levels))
    before = snapshot(tmp_path)
    result = kiln("check", "results/m", cwd=tmp_path, timeout=60)
    assert_one_line_error(result, "IntegrityError", "results/m/export/unified.json: unreadable job record "
                                                    "(nested deeper than 64 levels)")
    assert snapshot(tmp_path) == before


def test_depth_is_measured_without_recursion():
    assert jsonio.depth(1) == 0 and jsonio.depth([]) == 1 and jsonio.depth({"a": [1, {"b": []}]}) == 4
    value = []
    for _ in range(100_000):   # deeper than Python's recursion limit
        value = [value]
    assert jsonio.depth(value) == 100_001
