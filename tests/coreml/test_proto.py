"""kiln reads and writes Core ML files with coremltools' generated protobuf modules, imported
without the coremltools package (whose import brings its converters, torch and scikit-learn)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "silero-vad-coreml-v6.0.0"


def _run(code: str, *args: str) -> dict:
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_compiling_and_loading_a_model_never_imports_the_coremltools_package(tmp_path):
    package = GOLDEN / "unified" / "input.mlpackage"
    code = ("import json, sys\n"
            "from kiln.cli import main\n"
            "status = main(['compile', sys.argv[1], '-o', sys.argv[2]])\n"
            "from kiln.mil import load_model\n"
            "model = load_model(sys.argv[2])\n"
            "print(json.dumps({'status': status, 'inputs': [s.name for s in model.inputs()],\n"
            "                  'imported': sorted(set(sys.modules) & {'coremltools', 'torch', 'sklearn'})}))")
    out = _run(code, str(package), str(tmp_path / "unified.mlmodelc"))
    assert out["status"] == 0 and out["inputs"] == ["audio_input", "cell_state", "hidden_state"]
    assert out["imported"] == []


def test_a_later_import_of_coremltools_reuses_the_same_message_classes():
    code = ("import json, sys\n"
            "from kiln.coreml.proto import MIL_pb2, Model_pb2\n"
            "before = 'coremltools' in sys.modules\n"
            "import coremltools\n"
            "from coremltools.proto import Model_pb2 as theirs\n"
            "from coremltools.converters.mil import Builder as mb\n"
            "@mb.program(input_specs=[mb.TensorSpec(shape=(2, 3))])\n"
            "def prog(x):\n"
            "    return mb.relu(x=x)\n"
            "spec = coremltools.convert(prog, convert_to='mlprogram').get_spec()\n"
            "mine = Model_pb2.Model()\n"
            "mine.CopyFrom(spec)\n"
            "print(json.dumps({'before': before, 'same_module': theirs is Model_pb2,\n"
            "                  'same_class': type(spec) is Model_pb2.Model, 'ops': len(mine.mlProgram.functions['main']\n"
            "                  .block_specializations[mine.mlProgram.functions['main'].opset].operations)}))")
    out = _run(code)
    assert out == {"before": False, "same_module": True, "same_class": True, "ops": out["ops"]} and out["ops"] >= 1
