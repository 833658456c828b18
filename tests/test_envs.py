"""The conda environment file mirrors pyproject.toml's pins, and the lock file agrees with both."""

from __future__ import annotations

import re
import tomllib

import yaml


def _pins(requirements) -> dict[str, str]:
    pins = {}
    for req in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+?)(\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*", req)
        assert match, f"not an exact pin: {req!r} (kiln pins every direct dependency)"
        pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins


def test_conda_env_mirrors_pyproject(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pip_pins = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((repo / "envs" / "kiln.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _pins(pip_section) == pip_pins
    assert "python=3.11" in env["dependencies"]


def test_lock_file_agrees_with_pins(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"])
    lock = {}
    for line in (repo / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name.lower().replace("_", "-")] = version
    for name, version in pins.items():
        if name == "torch":
            assert lock[name].startswith(version)  # the local CPU wheel is 2.13.0+cpu
        else:
            assert lock.get(name) == version, f"constraints.txt pins {name}=={lock.get(name)}, pyproject {version}"


def test_every_job_runs_in_the_conda_env(repo):
    """`snakemake --software-deployment-method conda` runs every rule that runs kiln code in
    envs/kiln.yaml: each `script:` rule names it (rules/common.smk's KILN_ENV, relative to rules/)."""
    import re

    common = (repo / "rules" / "common.smk").read_text()
    env = re.search(r'^KILN_ENV = "([^"]+)"$', common, re.M).group(1)
    assert (repo / "rules" / env).resolve() == (repo / "envs" / "kiln.yaml").resolve()
    for smk in sorted((repo / "rules").glob("*.smk")):
        text = smk.read_text()
        scripts = len(re.findall(r"^\s+script:$", text, re.M))
        bound = len(re.findall(r"^\s+conda:\n\s+KILN_ENV\n\s+script:$", text, re.M))
        assert bound == scripts, f"{smk.name}: {scripts - bound} script rule(s) without `conda: KILN_ENV`"
