"""Code dependencies derived from imports: transitive, function-level, lazy tables, cached."""

from __future__ import annotations

import pytest

from kiln.workflow import codedeps as cd
from tests.helpers.workspaces import REPO

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
    assert "src/kiln/export/package.py" in silero and "src/kiln/models/silero_vad/build.py" in silero
    # prepare builds the network: the family's judging code is none of its code
    assert "src/kiln/models/silero_vad/judge.py" not in silero
    assert not any(f.endswith("/judge.py") or f.endswith("/checkpoint.py") for f in parakeet)
    # export converts the prepared program: no family code (not even the registry), so a family
    # edit stops at prepare when the traced program's bytes do not change
    assert not any(f.startswith("src/kiln/models/") for f in stage("export"))
    assert "src/kiln/family/spec.py" in stage("export")
    # the reference job makes the validation inputs (feeds) through the traced programs; parity judges
    reference = stage("reference", "silero_vad")
    assert {"src/kiln/models/silero_vad/build.py", "src/kiln/models/silero_vad/feeds.py"} <= set(reference)
    assert "src/kiln/models/silero_vad/judge.py" not in reference
    assert "src/kiln/models/silero_vad/judge.py" in stage("validate", "silero_vad")
    # a quantize job streams the variant (no family metric: the summary computes those)
    assert not any(f.endswith(("/judge.py", "/feeds.py")) for f in stage("quantize", "kokoro"))
    assert "src/kiln/models/kokoro/judge.py" in stage("quantization_summary", "kokoro")
    assert not any(f.startswith(("src/kiln/validate/", "src/kiln/mil/")) for f in parakeet)
    quantize = stage("quantize", "silero_vad")
    for needed in ("src/kiln/quantize/run.py", "src/kiln/validate/metrics.py", "src/kiln/compile/compiler.py",
                   "src/kiln/mil/ops/recurrent.py", "src/kiln/models/silero_vad/build.py"):
        assert needed in quantize
    validate = stage("validate", "silero_vad")
    assert "src/kiln/validate/metrics.py" in validate and "src/kiln/export/convert.py" not in validate
    assert "src/kiln/compile/compiler.py" in stage("compile")
    assert parakeet == sorted(parakeet) and all((REPO / f).is_file() for f in quantize)
    # a random source's checkpoint is built by its family's checkpoint part: an edit to the builder
    # refetches it, an edit to a wrapper or a metric does not
    fetch = stage("fetch_random", "parakeet_eou")
    assert {"src/kiln/models/_nemo.py", "src/kiln/models/parakeet_eou/checkpoint.py",
            "src/kiln/sources/__init__.py"} <= set(fetch)
    for family in ("parakeet_eou", "parakeet_tdt", "kokoro"):
        assert not any(f.endswith(("/build.py", "/judge.py", "/net.py")) for f in stage("fetch_random", family)), family


PARTS = {
    "kiln/__init__.py": "",
    "kiln/family/__init__.py": "",
    "kiln/models/__init__.py": "",
    "kiln/models/_shared.py": "x = 1\n",
    "kiln/models/fam/__init__.py": "from kiln.models.fam import build, checkpoint, judge\n",
    "kiln/models/fam/checkpoint.py": "from kiln.models import _shared\n",
    "kiln/models/fam/build.py": "from kiln.models.fam import net\n",
    "kiln/models/fam/net.py": "",
    "kiln/models/fam/judge.py": "from kiln.models.fam.build import net\nfrom kiln.models.fam.judge import extra\n",
    "kiln/models/fam/judge/__init__.py": "",
    "kiln/models/other/__init__.py": "from kiln.models.other import build, judge\n",
    "kiln/models/other/build.py": "from kiln.models.fam.judge import helper\n",   # reaches another part: followed
    "kiln/models/other/judge.py": "",
}


def test_a_stage_depends_on_the_family_parts_it_runs(tmp_path, monkeypatch):
    """A family package's ``__init__`` assembles every part; the walk follows it only into the parts
    the stage runs, and any other module's import whatever part it reaches."""
    monkeypatch.chdir(tmp_path)
    for rel, text in PARTS.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    (tmp_path / "src/kiln/models/fam/judge.py").unlink()   # judge as a subpackage
    (tmp_path / "src/kiln/models/fam/judge/extra.py").write_text("")

    def files(root, parts):
        return [f.removeprefix("src/kiln/models/") for f in cd.module_files(root, parts=parts)
                if f.startswith("src/kiln/models/") and f != "src/kiln/models/__init__.py"]

    assert files("kiln.models.fam", ("checkpoint",)) == ["_shared.py", "fam/__init__.py", "fam/checkpoint.py"]
    assert files("kiln.models.fam", ("build",)) == ["fam/__init__.py", "fam/build.py", "fam/net.py"]
    assert files("kiln.models.fam", None) == ["_shared.py", "fam/__init__.py", "fam/build.py", "fam/checkpoint.py",
                                              "fam/judge/__init__.py", "fam/net.py"]
    # other's build imports fam's judging code: its prepare depends on it
    assert "fam/judge/__init__.py" in files("kiln.models.other", ("build",))
    assert "other/judge.py" not in files("kiln.models.other", ("build",))
    with pytest.raises(cd.CodeDepsError, match=r"unknown family part\(s\) \['wrappers'\]"):
        cd.module_files("kiln.models.fam", parts=("wrappers",))
