"""dvc.lock agrees with dvc.yaml: every locked stage exists, with the same command, deps, params and
outs (a lock left from an older dvc.yaml makes `dvc status` and `dvc pull` talk about stages that no
longer exist). The lock DVC writes after a real build is checked in test_dvc.py."""

from __future__ import annotations

import yaml

from tests.helpers.workspaces import REPO


def _params(spec) -> dict[str, set]:
    """dvc.yaml params (``[{file: [keys]}]`` or ``[key]`` for params.yaml) as {file: {keys}}."""
    out: dict[str, set] = {}
    for entry in spec or []:
        if isinstance(entry, dict):
            for file, keys in entry.items():
                out.setdefault(file, set()).update(keys)
        else:
            out.setdefault("params.yaml", set()).add(entry)
    return out


def _outs(spec) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in spec or []]


def lock_mismatches(lock: dict, dvc_yaml: dict) -> list[str]:
    """What in ``lock`` (a parsed dvc.lock) disagrees with ``dvc_yaml`` (a parsed dvc.yaml)."""
    stages = dvc_yaml.get("stages", {})
    problems = [] if lock.get("schema") == "2.0" else [f"schema {lock.get('schema')!r}, expected '2.0'"]
    for name, locked in (lock.get("stages") or {}).items():
        stage = stages.get(name)
        if stage is None:
            problems.append(f"stage {name!r} is not in dvc.yaml (stages: {', '.join(stages)})")
            continue
        if locked.get("cmd") != stage.get("cmd"):
            problems.append(f"{name}: cmd {locked.get('cmd')!r} != {stage.get('cmd')!r}")
        deps = [d["path"] for d in locked.get("deps", [])]
        if deps != stage.get("deps", []):
            problems.append(f"{name}: deps {deps} != {stage.get('deps', [])}")
        params = {f: set(keys) for f, keys in (locked.get("params") or {}).items()}
        if params != _params(stage.get("params")):
            problems.append(f"{name}: params {params} != {_params(stage.get('params'))}")
        outs = [o["path"] for o in locked.get("outs", [])]
        if outs != _outs(stage.get("outs")):
            problems.append(f"{name}: outs {outs} != {_outs(stage.get('outs'))}")
        for entry in locked.get("deps", []) + locked.get("outs", []):
            if not entry.get("md5"):
                problems.append(f"{name}: {entry['path']} has no recorded digest")
    return problems


def test_the_committed_lock_if_any_agrees_with_dvc_yaml():
    # dvc.lock is written by `dvc commit -f` after a build and committed with the results it names
    lock = REPO / "dvc.lock"
    if lock.exists():
        assert lock_mismatches(yaml.safe_load(lock.read_text()), yaml.safe_load((REPO / "dvc.yaml").read_text())) == []


def test_a_lock_from_an_older_dvc_yaml_is_caught():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stale = {"schema": "2.0", "stages": {"build@silero_vad": {
        "cmd": "snakemake --cores all all_silero_vad",
        "deps": [{"path": "Snakefile", "md5": "5b37c53a5499b308fdb92c6052c4a026"}],
        "outs": [{"path": "results/silero_vad", "md5": "c1ea1a3419be8c9bdc6fa1e2ecb797e5.dir"}]}}}
    assert lock_mismatches(stale, dvc_yaml) == [
        "stage 'build@silero_vad' is not in dvc.yaml (stages: build)"]
    renamed = {"schema": "2.0", "stages": {"build": stale["stages"]["build@silero_vad"]}}
    problems = lock_mismatches(renamed, dvc_yaml)
    assert problems[0] == "build: cmd 'snakemake --cores all all_silero_vad' != 'snakemake --cores all all'"
    assert any(p.startswith("build: deps ['Snakefile'] != ['Snakefile', 'contracts', 'rules'") for p in problems)
    assert any(p.startswith("build: outs ['results/silero_vad'] != ['results']") for p in problems)
