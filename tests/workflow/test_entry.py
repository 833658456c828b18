"""One job entry: a rule's named inputs, outputs, params and wildcards reach its job by name."""

from __future__ import annotations

import inspect
import re

import pytest

from kiln.workflow import jobs, resources
from kiln.workflow.entry import JobInterfaceError, bind
from tests.helpers.workspaces import REPO, copy_workflow


def metadata_rule(**changes):
    """The names and values the metadata rule gives its job (rules/validate.smk)."""
    rule = {
        "input": {"source": "r/m/source.json", "prepare_record": "r/m/prepared/prepare.json",
                  "torch_latency": "r/m/reference/torch_latency.json", "exports": ["r/m/export/a.json"],
                  "parities": ["r/m/parity/a.json"], "compiles": ["r/m/compile/a.json"],
                  "end_to_end": "r/m/end_to_end.json"},
        "output": {"metadata": "r/m/metadata.json", "latency_plot": "r/m/plots/latency.png",
                   "table": "r/m/tables/parity.html"},
        "params": {"plots_dir": "r/m/plots"},
        "wildcards": {"model": "m"},
    }
    for key, value in changes.items():
        rule[key] = value
    return rule


def test_names_reach_the_arguments_of_the_same_name():
    kwargs = bind("metadata", jobs.metadata_job, **metadata_rule())
    assert kwargs == {"model": "m", "source": "r/m/source.json", "prepare_record": "r/m/prepared/prepare.json",
                      "torch_latency": "r/m/reference/torch_latency.json", "exports": ["r/m/export/a.json"],
                      "parities": ["r/m/parity/a.json"], "compiles": ["r/m/compile/a.json"],
                      "end_to_end": "r/m/end_to_end.json", "metadata": "r/m/metadata.json",
                      "plots_dir": "r/m/plots", "table": "r/m/tables/parity.html"}


def test_a_missing_name_fails_naming_the_rule_the_job_and_the_name():
    rule = metadata_rule()
    del rule["input"]["torch_latency"]
    with pytest.raises(JobInterfaceError, match=r"rule metadata: kiln\.workflow\.jobs\.metadata_job: the rule gives "
                                                r"no input, output, param or wildcard named 'torch_latency'"):
        bind("metadata", jobs.metadata_job, **rule)


def test_an_extra_name_fails_unless_it_reaches_the_job_another_way():
    rule = metadata_rule()
    rule["output"]["summary_plot"] = "r/m/summary.png"   # outside plots_dir: nothing writes it
    with pytest.raises(JobInterfaceError, match=r"rule metadata: .*metadata_job: takes no argument for the rule's "
                                                r"output 'summary_plot'"):
        bind("metadata", jobs.metadata_job, **rule)
    # a renamed param is both missing and would be extra: the missing one is named first
    rule = metadata_rule(params={"plot_dir": "r/m/plots"})
    with pytest.raises(JobInterfaceError, match="named 'plots_dir'"):
        bind("metadata", jobs.metadata_job, **rule)
    # ordering-only inputs (settings and code stamps) reach no argument by design
    rule = metadata_rule()
    rule["input"].update(stamp=".kiln/stamps/m/x.json", code=".kiln/stamps/code/x.json")
    assert "stamp" not in bind("metadata", jobs.metadata_job, **rule)


def test_a_component_map_param_carries_the_files_of_the_input_of_the_same_name():
    rule = {"input": {"facts": "f", "task": "t", "task_inputs": "t.npz", "packages": ["r/a.mlpackage", "r/b.mlpackage"]},
            "output": {"record": "r/e2e.json"},
            "params": {"packages": {"a": "r/a.mlpackage", "b": "r/b.mlpackage"}, "plots_dir": "r/plots"},
            "wildcards": {"model": "m"}}
    assert bind("end_to_end", jobs.end_to_end_job, **rule)["packages"] == {"a": "r/a.mlpackage", "b": "r/b.mlpackage"}
    rule["params"]["packages"] = {"a": "r/a.mlpackage"}   # not the same files: which one is meant?
    with pytest.raises(JobInterfaceError, match="'packages' is both input and param"):
        bind("end_to_end", jobs.end_to_end_job, **rule)


def test_a_name_given_twice_or_a_positional_job_is_refused():
    rule = metadata_rule()
    rule["output"]["source"] = "r/m/other.json"
    with pytest.raises(JobInterfaceError, match="'source' is both input and output"):
        bind("metadata", jobs.metadata_job, **rule)

    def positional_job(config, model, record):
        return None
    with pytest.raises(JobInterfaceError, match="takes model, record by position"):
        bind("fetch", positional_job, output={"record": "r"}, wildcards={"model": "m"})


def test_threads_reach_a_job_that_takes_them():
    rule = {"input": {"facts": "f", "reference": "r.npz", "base": "b.mlpackage", "package": "p.mlpackage",
                      "program": "p.pt", "stamp": "s", "code": "c"},
            "output": {"record": "q/s/c.json"}, "params": {"out_dir": "q/s"},
            "wildcards": {"model": "m", "component": "c", "strategy": "s"}}
    assert bind("quantize", jobs.quantize_job, threads=3, **rule)["threads"] == 3


def _script_jobs() -> dict[str, set[str]]:
    """script file -> the job functions it runs."""
    out = {}
    for script in sorted((REPO / "scripts").glob("*.py")):
        text = script.read_text()
        assert "run_job(snakemake, " in text, f"{script.name}: does not run its job through kiln.workflow.entry"
        out[script.name] = set(re.findall(r"\b(\w+_job)\b", text)) - {"run_job"}
    return out


def test_every_script_is_one_call_by_name_and_every_job_is_keyword_only():
    from kiln.distribution import publish, verify

    modules = {"jobs": jobs, "publish": publish, "verify": verify}
    for script, names in _script_jobs().items():
        text = (REPO / "scripts" / script).read_text()
        assert "snakemake.input." not in text and "snakemake.output." not in text, script   # no positional mapping
        for name in names:
            job = next(getattr(m, name) for m in modules.values() if hasattr(m, name))
            arguments = list(inspect.signature(job).parameters.values())[1:]
            assert all(a.kind is inspect.Parameter.KEYWORD_ONLY for a in arguments), name


def test_every_stage_has_one_row_and_the_config_schema_names_the_same_stages():
    import json

    schema = json.loads((REPO / "src" / "kiln" / "schemas" / "config.schema.json").read_text())
    stages = schema["$defs"]["model"]["properties"]["resources"]["properties"]["stages"]["properties"]
    assert sorted(stages) == sorted(resources.STAGES)
    # each stage's job is named after it (the entry finds the stage's memory limit by the job's name)
    assert all(hasattr(jobs, f"{stage}_job") for stage in resources.STAGES)
    assert set(schema["$defs"]["stage_resources"]["properties"]) == set(resources.OVERRIDABLE)


def _job_resources(out: str) -> dict[tuple[str, str], str]:
    found = {}
    for block in re.split(r"\n(?=\s*rule \w+:)", out):
        head = re.match(r"\s*rule (\w+):", block)
        if head and "resources:" in block:
            wildcards = re.search(r"wildcards: (.*)", block)
            found[(head.group(1), wildcards.group(1) if wildcards else "")] = re.search(r"resources: (.*)", block).group(1)
    return found


@pytest.mark.slow
def test_a_model_sets_one_stage_without_touching_the_others(tmp_path):
    """config.yaml: models.<m>.resources.stages.<stage> changes that stage's reservation, threads
    and wall time; every other stage keeps the table's defaults (dry run, a separate process)."""
    ws = copy_workflow(tmp_path / "kiln")
    ws.edit_config(lambda c: c["models"]["silero_vad"].setdefault("resources", {}).update(
        {"mem_mb": 3000, "stages": {"quantize": {"mem_mb": 5000, "runtime": 45}}}))
    out = ws.snakemake("-n", "--forceall", "-p", "all_silero_vad").stdout
    planned = _job_resources(out)
    quantize = [r for (rule, _), r in planned.items() if rule == "quantize"]
    assert quantize and all("mem_mb=5000" in r and "runtime=45" in r for r in quantize)
    exports = [r for (rule, _), r in planned.items() if rule == "export"]
    assert exports and all("mem_mb=3000" in r and "runtime=60" in r for r in exports)
    assert all("mem_mb=1000" in r for (rule, _), r in planned.items() if rule == "metadata")
    # a stage the table does not know is refused by the schema, naming the key
    ws.edit_config(lambda c: c["models"]["silero_vad"]["resources"]["stages"].update({"quantise": {"mem_mb": 1}}))
    bad = ws.snakemake("-n", "all_silero_vad", check=False)
    assert bad.returncode != 0 and "quantise" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_a_rule_and_job_that_disagree_fail_before_the_job_naming_both(tmp_path):
    """A rule whose param lost its job's name: the job is not run, its log and stderr say which
    rule, which job and which name, in one line; nothing is written that a later run takes as done."""
    ws = copy_workflow(tmp_path / "kiln")
    fetch = ws.root / "rules" / "fetch.smk"
    fetch.write_text(fetch.read_text().replace("checkpoint_dir=at(", "checkpoints=at("))
    result = ws.snakemake("--cores", "1", "results/silero_vad/source.json", check=False)
    assert result.returncode != 0
    message = ("JobInterfaceError: rule fetch: kiln.workflow.jobs.fetch_job: the rule gives no input, output, "
               "param or wildcard named 'checkpoint_dir'")
    assert message in (ws.root / "logs" / "silero_vad" / "fetch.log").read_text()
    assert message in result.stderr and "Traceback" not in (ws.root / "logs" / "silero_vad" / "fetch.log").read_text()
    assert not (ws.root / "results" / "silero_vad" / "source.json").exists()
