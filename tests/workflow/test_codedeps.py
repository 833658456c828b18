"""Code dependencies derived from imports: transitive, function-level, lazy tables, cached."""

from __future__ import annotations

import pytest

from kiln.workflow import codedeps as cd
from tests.workflow.conftest import REPO

FILES = {
    "kiln/__init__.py": "",
    "kiln/a.py": "from kiln.b import thing\n\ndef late():\n    from .c import x\n    return x\n",
    "kiln/b.py": "thing = 1\n",
    "kiln/c.py": "import kiln.pkg.d\nx = 2\n",
    "kiln/pkg/__init__.py": '_LAZY = {"f": "kiln.pkg.lazy", "text": "not kiln.module"}\n',
    "kiln/pkg/d.py": "from . import lazy as _unused_alias\n",
    "kiln/pkg/lazy.py": "import numpy\n",
    "kiln/unused.py": "from kiln import a\n",
}


@pytest.fixture()
def src(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel, text in FILES.items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "src"


def test_transitive_function_level_relative_and_lazy_imports(src):
    assert cd.module_files("kiln.a") == [f"src/kiln/{p}" for p in (
        "__init__.py", "a.py", "b.py", "c.py", "pkg/__init__.py", "pkg/d.py", "pkg/lazy.py")]
    assert cd.module_files("kiln.pkg.d") == ["src/kiln/__init__.py", "src/kiln/pkg/__init__.py",
                                              "src/kiln/pkg/d.py", "src/kiln/pkg/lazy.py"]


def test_an_edit_that_adds_an_import_is_seen(src):
    assert "src/kiln/unused.py" not in cd.module_files("kiln.b")
    (src / "kiln/b.py").write_text("thing = 1\n\ndef f():\n    import kiln.unused\n")
    assert "src/kiln/unused.py" in cd.module_files("kiln.b")
    assert (src.parent / cd.CACHE_PATH).is_file()


def test_unknown_root_and_unparsable_file_are_named(src):
    with pytest.raises(cd.CodeDepsError, match="'kiln.nope' has no source file under src/"):
        cd.module_files("kiln.nope")
    (src / "kiln/b.py").write_text("def broken(:\n")
    with pytest.raises(cd.CodeDepsError, match=r"src/kiln/b.py: cannot parse"):
        cd.module_files("kiln.a")
    with pytest.raises(cd.CodeDepsError, match="no code roots for workflow stage 'nope'"):
        cd.stage_files("nope")


def test_stages_of_the_real_workflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the import cache goes here, not into the checkout

    def stage(*args):
        prefix = f"{REPO}/"
        return [f.removeprefix(prefix) for f in cd.stage_files(*args, src=REPO / "src")]

    parakeet = stage("prepare", "parakeet_tdt")
    silero = stage("prepare", "silero_vad")
    assert "src/kiln/models/_nemo.py" in parakeet and "src/kiln/models/_nemo.py" not in silero
    assert "src/kiln/export/package.py" in silero and "src/kiln/models/silero_vad.py" in silero
    # export converts the prepared program: no family code, so a family edit stops at prepare when
    # the traced program's bytes do not change
    assert not any(f.startswith("src/kiln/models/") and not f.endswith(("spec.py", "__init__.py"))
                   for f in stage("export"))
    assert "src/kiln/models/silero_vad.py" in stage("reference", "silero_vad")
    assert not any(f.startswith(("src/kiln/validate/", "src/kiln/mil/")) for f in parakeet)
    quantize = stage("quantize", "silero_vad")
    for needed in ("src/kiln/quantize/run.py", "src/kiln/validate/metrics.py", "src/kiln/compile/compiler.py",
                   "src/kiln/mil/ops/recurrent.py", "src/kiln/models/silero_vad.py"):
        assert needed in quantize
    validate = stage("validate", "silero_vad")
    assert "src/kiln/validate/metrics.py" in validate and "src/kiln/export/convert.py" not in validate
    assert "src/kiln/compile/compiler.py" in stage("compile")
    assert parakeet == sorted(parakeet) and all((REPO / f).is_file() for f in quantize)
    # a random source's checkpoint is built by its family: an edit to the builder refetches it
    fetch = stage("fetch_random", "parakeet_eou")
    assert {"src/kiln/models/_nemo.py", "src/kiln/models/_eou.py", "src/kiln/sources/__init__.py"} <= set(fetch)
