"""The layer table (kiln.layers) against the code: no import points up, every module is placed."""

from __future__ import annotations

import textwrap
from pathlib import Path

from kiln.layers import LAYERS, layer_of, violations

SRC = Path(__file__).resolve().parents[1] / "src"


def test_no_import_points_up_a_layer():
    found = violations(SRC)
    assert found == [], "imports that point up a layer:\n" + "\n".join(map(str, found))


def test_the_longest_prefix_places_a_module():
    names = [layer.name for layer in LAYERS]
    assert names.index("executor and compiler") == layer_of("kiln.mil.plan")
    assert names.index("command line") == layer_of("kiln.mil.cli")
    assert names.index("foundation") == layer_of("kiln")
    assert layer_of("kiln.misc") is None and layer_of("kilnish") is None and layer_of("numpy") is None


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_an_upward_import_inside_a_function_is_named_with_its_line(tmp_path):
    write(tmp_path, "kiln/__init__.py", "")
    write(tmp_path, "kiln/foundation/__init__.py", "")
    write(tmp_path, "kiln/foundation/errors.py", "")
    write(tmp_path, "kiln/workflow/__init__.py", "")
    write(tmp_path, "kiln/mil/__init__.py", "")
    write(tmp_path, "kiln/mil/plan.py", """\
        from kiln.foundation.errors import *
        def run():
            from ..workflow import jobs
        """)
    write(tmp_path, "kiln/workflow/jobs.py", "from kiln.mil import plan\n")
    found = violations(tmp_path)
    assert [str(v) for v in found] == [
        "kiln.mil.plan:3 imports kiln.workflow.jobs: 'executor and compiler' may not import 'workflow' above it"]


def test_a_module_no_layer_places_is_named(tmp_path):
    write(tmp_path, "kiln/__init__.py", "")
    write(tmp_path, "kiln/misc.py", "")
    assert [(v.module, v.why) for v in violations(tmp_path)] == [
        ("kiln.misc", "no layer of kiln.layers.LAYERS places this module")]
