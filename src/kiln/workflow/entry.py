"""The one way a rule runs its job: by name.

A job is a function ``job(config, *, name=..., ...)`` whose keyword-only arguments are named after
the rule's named inputs, outputs, params and wildcards (and ``threads``). A rule's script is one
line, ``run_job(snakemake, jobs.<stage>_job)``: :func:`bind` passes each name to the argument of the
same name, so a rule and its job agree by name, never by position, and a disagreement fails before
the job runs, naming the rule and the name:

* an argument without a default that the rule does not give is **missing**;
* a name the rule gives that reaches no argument is **extra**, except the inputs that only order the
  DAG (:data:`DEPENDENCIES`) and files that reach the job another way: inside a directory argument
  (named ``*dir``: ``plots_dir``, ``out_dir``), or as the values of a ``{component: path}`` param of the same name (a rule's
  input or output list is the DAG's view of that map);
* a name given twice (an input and an output, a wildcard and a param) is **ambiguous**.

The stage's resources (:mod:`kiln.workflow.resources`, by the job's name ``<stage>_job``) say whether
the job's memory reservation becomes its OS limit and whether torch's threads are pinned.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kiln.foundation.errors import ConfigError, KilnError

#: inputs that only order the DAG: a settings stamp and a code stamp (kiln.workflow.stamps, codedeps),
#: and the prepare job's resolved contracts, which reach the job through its config (:func:`run_job`
#: binds the model's components to them)
DEPENDENCIES = frozenset({"stamp", "code", "contracts"})


class JobInterfaceError(KilnError):
    """A rule and its job disagree on a name (missing, extra or ambiguous)."""


def _plain(value: Any) -> Any:
    """A Snakemake value as the job sees it: a path string, a list of them, or a param as given."""
    if isinstance(value, str | Path):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _files(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if isinstance(value, str) else []


def _inside(path: str, directory: str) -> bool:
    return Path(directory) in Path(path).parents


def job_name(job: Callable) -> str:
    return f"{job.__module__}.{job.__qualname__}"


def bind(rule: str, job: Callable, *, input: Mapping[str, Any] = {}, output: Mapping[str, Any] = {},
         params: Mapping[str, Any] = {}, wildcards: Mapping[str, Any] = {}, threads: int | None = None) -> dict:
    """The keyword arguments of ``job`` from a rule's named inputs, outputs, params and wildcards."""
    where = f"rule {rule}: {job_name(job)}"
    signature = inspect.signature(job)
    arguments = list(signature.parameters.values())
    if not arguments or arguments[0].kind not in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise JobInterfaceError(f"{where}: a job takes the config first")
    positional = [a.name for a in arguments[1:] if a.kind is not inspect.Parameter.KEYWORD_ONLY]
    if positional:
        raise JobInterfaceError(f"{where}: takes {', '.join(positional)} by position; a job's arguments after "
                                f"the config are keyword-only (named after the rule's inputs, outputs, params)")
    wanted = {a.name: a for a in arguments[1:]}

    offered: dict[str, tuple[str, Any]] = {}
    covered: dict[str, str] = {}   # names whose files reach the job through a param of the same name
    for kind, values in (("wildcard", wildcards), ("input", input), ("output", output)):
        for name, value in values.items():
            if name in offered:
                raise JobInterfaceError(f"{where}: {name!r} is both {offered[name][0]} and {kind}; "
                                        f"name each once")
            offered[name] = (kind, _plain(value))
    for name, value in params.items():
        value = _plain(value)
        if name in offered:
            kind, files = offered[name]
            if (kind in ("input", "output") and isinstance(value, dict)
                    and sorted(map(str, value.values())) == sorted(_files(files))):
                covered[name] = kind   # the param is the {component: path} map of those files
            else:
                raise JobInterfaceError(f"{where}: {name!r} is both {kind} and param; name each once (a param "
                                        f"may share a name only as the {{component: path}} map of the same files)")
        offered[name] = ("param", value)
    if threads is not None and "threads" in wanted and "threads" not in offered:
        offered["threads"] = ("threads", int(threads))

    missing = [name for name, a in wanted.items() if name not in offered and a.default is inspect.Parameter.empty]
    if missing:
        raise JobInterfaceError(f"{where}: the rule gives no input, output, param or wildcard named "
                                f"{', '.join(map(repr, missing))}")
    kwargs = {name: offered[name][1] for name in wanted if name in offered}
    directories = [v for n, v in kwargs.items() if n.endswith("dir") and isinstance(v, str)]
    extra = []
    for name, (kind, value) in offered.items():
        if name in kwargs or kind in ("wildcard", "threads"):
            continue
        if kind == "input" and name in DEPENDENCIES:
            continue
        files = _files(value)
        if kind in ("input", "output") and files and all(any(_inside(f, d) for d in directories) for f in files):
            continue
        extra.append(f"{kind} {name!r}")
    if extra:
        raise JobInterfaceError(f"{where}: takes no argument for the rule's {', '.join(extra)} (rename one to "
                                f"the other, or drop what the job does not read or write)")
    return kwargs


def run_job(smk: Any, job: Callable) -> Any:
    """Run ``job`` as the Snakemake job ``smk`` (a rule's ``snakemake`` object) describes: its log
    file, its config, its named inputs, outputs, params and wildcards, its stage's resources."""
    from kiln.config import build_config
    from kiln.workflow import logs, resources

    stage = resources.STAGES.get(job.__name__.removesuffix("_job"))

    def call():
        inputs, params, wildcards = _named(smk.input), _named(smk.params), _named(smk.wildcards)
        kwargs = bind(smk.rule, job, input=inputs, output=_named(smk.output),
                      params=params, wildcards=wildcards, threads=smk.threads)
        config = build_config(smk.config)
        if "contracts" in inputs:
            config = bound_config(config, wildcards.get("model", params.get("model")), inputs["contracts"])
        return job(config, **kwargs)

    return logs.run_job(smk.log[0] if smk.log else None, call,
                        threads=smk.threads if stage is not None and stage.pin_threads else None,
                        mem_mb=smk.resources.mem_mb if stage is not None and stage.enforced else None)


def bound_config(config, model: str, contracts: str | Path):
    """``config`` with ``model``'s components bound to the resolved contracts the prepare job wrote
    (``contracts``, :data:`kiln.layout.CONTRACTS`): the shapes every job after prepare uses."""
    try:
        data = json.loads(Path(contracts).read_text())
        resolved = data["contracts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the resolved contracts ({type(exc).__name__}: {exc}); re-run the "
                          f"prepare job", file=str(contracts)) from None
    return config.bound(model, resolved, file=str(contracts))


def _named(values: Any) -> dict[str, Any]:
    """The named entries of a Snakemake Namedlist (unnamed ones are ordering-only inputs)."""
    return {name: getattr(values, name) for name in values.keys()}

