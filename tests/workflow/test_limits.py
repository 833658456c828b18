"""Memory guards: a contract too large for its reservation is refused up front naming the input and
the estimate; a job that runs away under its OS limit dies with a diagnosis, not the machine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from kiln.config import build_config, load_config
from kiln.workflow.limits import MemoryLimitError, check_fits, estimate_peak_mb


def _parakeet_preprocessor(repo, samples):
    """The tiny TDT preprocessor bound to a resolved contract of ``samples`` audio samples (what its
    prepare job resolves from a long enough ``seconds`` option)."""
    import copy
    import json

    from tests.conftest import RESOLVED_CONTRACTS

    raw = yaml.safe_load((repo / "config.yaml").read_text())
    resolved = copy.deepcopy(json.loads(RESOLVED_CONTRACTS.read_text())["parakeet_tdt_v3_tiny"])
    resolved["preprocessor"]["inputs"]["audio_signal"]["shape"] = [1, samples]
    config = build_config(raw, str(repo / "config.yaml")).bound("parakeet_tdt_v3_tiny", resolved)
    return config.component("parakeet_tdt_v3_tiny", "preprocessor")


def test_a_huge_contract_is_refused_naming_the_input_and_the_estimate(repo, tmp_path):
    component = _parakeet_preprocessor(repo, 100_000_000)
    source = tmp_path / "model.nemo"
    source.write_bytes(b"\0" * 2_000_000)
    with pytest.raises(MemoryLimitError) as caught:
        check_fits(component, [source], mem_mb=6000)
    message = str(caught.value)
    assert "parakeet_tdt_v3_tiny/preprocessor" in message and "input 'audio_signal' [1, 100000000]" in message
    assert f"{estimate_peak_mb(component, 2_000_000):,.0f} MB" in message and "6,000 MB" in message


def test_every_configured_component_fits_its_reservation(repo):
    from tests.conftest import bind_resolved

    config = bind_resolved(load_config(repo / "config.yaml"))
    for model in config.models.values():
        for component in model.components.values():
            assert check_fits(component, [], mem_mb=model.mem_mb) < model.mem_mb / 2, (model.name, component.name)


@pytest.mark.parametrize("allocator", ["numpy", "torch"])
def test_a_runaway_job_dies_with_a_diagnosis_under_its_limit(tmp_path, allocator):
    log = tmp_path / "job.log"
    allocate = {"numpy": "import numpy as np; np.ones(3 * 2**30, np.uint8)",
                "torch": "import torch; torch.ones(3 * 2**30, dtype=torch.uint8)"}[allocator]
    script = textwrap.dedent(f"""
        from kiln.workflow.logs import run_job
        def job():
            {allocate}
        run_job({str(log)!r}, job, mem_mb=1500)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    text = log.read_text()
    assert "out of memory: the job needed more than its reservation of 1,500 MB" in text, text
    assert "Traceback" not in text


_MAPPED_BYTES = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2

    def job():
        big = np.ones(16 << 20, np.uint8)  # mapped; freeing it lets glibc raise its threshold to 16 MiB
        del big
        before = libc.mallinfo2().hblkhd
        held = np.ones(8 << 20, np.uint8)
        print(json.dumps({"mapped_growth": libc.mallinfo2().hblkhd - before}))

    if sys.argv[1] == "job":
        from kiln.workflow.logs import run_job
        run_job(None, job)
    else:
        job()
""")


def _mapped_growth(mode: str) -> int:
    import json

    result = subprocess.run([sys.executable, "-c", _MAPPED_BYTES, mode], capture_output=True, text=True,
                            timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["mapped_growth"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_jobs_pin_glibcs_mmap_threshold():
    """A job's large blocks stay mapped (returned to the OS when freed) after it freed larger ones:
    without the pin, glibc serves them from the heap, where a full-size Parakeet reference job grew
    from 3 GB to 19 GB (kiln.workflow.limits.pin_mmap_threshold)."""
    assert _mapped_growth("plain") < 1 << 20      # glibc's own behaviour: the 8 MiB block is on the heap
    assert _mapped_growth("job") >= 8 << 20       # in a kiln job: mapped on its own
