"""A real cluster: Debian's Slurm on localhost (one node: munged, MariaDB + slurmdbd, slurmctld,
slurmd), `snakemake --profile profiles/slurm` for the Silero target in a fresh workspace, outputs
compared byte for byte with a local run of the same workspace."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import slurm_cluster
from tests.helpers.workspaces import small_workspace

pytestmark = pytest.mark.slow

MODEL = "silero_vad"
SLURM_POLLING = Path(__file__).resolve().parents[1] / "helpers" / "slurm_polling.py"
#: outputs that are byte-reproducible by design (README "Packages are byte-reproducible"): checkpoints
#: and their records, traced programs, reference data, packages, bundles, quantized variants, and
#: plots of computed values
REPRODUCIBLE = ("source.json", "checkpoint/**/*", "prepared/facts.json", "reference/*.npz", "reference/task.json",
                "*.mlpackage/**/*", "*.mlmodelc/**/*", "quantized/**/*.mlpackage/**/*",
                "quantized/**/*.mlmodelc/**/*", "plots/*_parity.png")
#: keys of job records that hold measurements of this run (wall times, latencies), not results
MEASURED = {"seconds", "export_seconds", "latency", "torch_latency", "timings", "wall_seconds",
            "median_ms", "mean_ms", "p90_ms"}  # timing statistics of a run (reference/torch_latency.json)


def _archive_members(path: Path) -> dict[str, bytes]:
    """A TorchScript archive's code, constants and weights: not the random id torch writes into every
    save, nor the debug records (source ranges of the tracing process, whose call stack includes
    Snakemake's randomly named copy of the job script)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return {n: archive.read(n) for n in archive.namelist()
                if not n.endswith((".data/serialization_id", ".debug_pkl"))}


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def _without_measurements(value):
    if isinstance(value, dict):
        return {k: _without_measurements(v) for k, v in value.items() if k not in MEASURED}
    if isinstance(value, list):
        return [_without_measurements(v) for v in value]
    return value


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.install()
    if reason:
        pytest.skip(f"no Slurm here: {reason}")
    with slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm")) as local:
        yield local


def test_slurm_build_equals_the_local_build(cluster, built_workspace, tmp_path):
    ws = small_workspace(tmp_path / "kiln")
    # sbatch carries this environment (PATH, PYTHONPATH, SLURM_CONF) into the jobs; status checks
    # start after 2 s instead of the plugin's 40 and follow every 2 s instead of 40 s and more (this
    # cluster answers at once): `snakemake` run by tests/helpers/slurm_polling.py
    result = ws.run(sys.executable, str(SLURM_POLLING), "--profile", "profiles/slurm",
                    "--slurm-init-seconds-before-status-checks", "2", f"all_{MODEL}",
                    env={k: cluster.env[k] for k in ("SLURM_CONF", "USER")})
    log = result.stdout + result.stderr
    submitted = log.count("has been submitted with SLURM jobid")
    assert submitted >= 3, log[-3000:]           # source chain, component pipeline, summaries
    assert "group_source_silero_vad" in log and "group_summary_silero_vad" in log

    ours, theirs = ws.root / "results" / MODEL, built_workspace.root / "results" / MODEL
    slurm_files, local_files = _files(ours), _files(theirs)
    assert set(slurm_files) == set(local_files)
    reproducible = {name for pattern in REPRODUCIBLE for name in
                    (str(p.relative_to(ours)) for p in ours.glob(pattern) if p.is_file())}
    assert len(reproducible) > 20
    differing = sorted(n for n in reproducible if slurm_files[n].read_bytes() != local_files[n].read_bytes())
    assert not differing, f"differ between the slurm and the local build: {differing}"
    # traced programs: code, constants and weights equal (see _archive_members)
    programs = sorted(n for n in slurm_files if n.startswith("prepared/") and n.endswith(".pt"))
    assert programs
    for name in programs:
        assert _archive_members(slurm_files[name]) == _archive_members(local_files[name]), name
        reproducible.add(name)
    # the job records agree on everything but the measurements of the run
    for name in sorted(set(slurm_files) - reproducible):
        if name.endswith(".json"):
            a, b = (json.loads(files[name].read_text()) for files in (slurm_files, local_files))
            if name == "prepared/prepare.json":   # the traced programs' sha256s: compared above
                a.pop("programs"), b.pop("programs")
            assert _without_measurements(a) == _without_measurements(b), name
