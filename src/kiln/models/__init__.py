"""Model families: one package per family (``kiln/models/<family>/``) whose ``__init__`` exposes
``FAMILY``, a :class:`kiln.family.spec.FamilySpec` that reads as the list of its components; the
package's ``build`` module builds the network (load, facts, wrappers), its ``judge`` module judges it
(feeds, metrics, plots, task), an optional ``checkpoint`` module builds random-initialised
checkpoints (:data:`kiln.family.PARTS`: the workflow's code stamps follow that split). Adding a
model means adding one such package and one config block -- or, for a plain model (one network, a
fixed contract), only a config block of family ``plain``: that package exposes
``family_for(model_config)`` instead of ``FAMILY``, a spec built from the block (:func:`family_of`
serves both). Modules whose names start with ``_`` and plain modules are shared helpers, not
families. A family may add task labels with a ``TASKS`` mapping (label -> description).

Families are looked up by package name, so this package stays cheap to import (no torch here).
"""

from __future__ import annotations

from kiln.foundation.errors import ModelError
# the registry lives in the family layer (below the stages that look families up); kiln.models keeps its names
from kiln.family.registry import family_names, family_of, family_tasks, get_family  # noqa: F401


def check_models(config) -> None:
    """Check every configured model against its family's component specs, before any job runs:
    each component names a spec the family builds (its own name or ``spec``) with options the
    spec takes, its contract names the inputs and outputs the spec
    declares (same count, same order), and a random source names a family that can make one.
    Raises :class:`kiln.foundation.errors.ConfigError` naming the key."""
    from kiln.foundation.errors import ConfigError
    from kiln.tasks import check_task

    for name, model in config.models.items():   # labels first: cheap, and what a user edits most
        check_task(name, model.task, config_tasks=config.tasks, family_tasks=family_tasks(model.family),
                   file=config.path)
    for name, model in config.models.items():
        try:
            family = family_of(model)
        except ModelError as exc:
            raise ConfigError(str(exc), key=f"models.{name}.network", file=config.path) from None
        if model.source.get("kind") == "random" and family.build_random is None:
            raise ConfigError(f"family '{model.family}' cannot build a random-initialised model",
                              key=f"models.{name}.source.kind", file=config.path)
        for cname, component in model.components.items():
            problem = family.contract_problem(component)   # the spec it names, its options, its names
            if problem:
                raise ConfigError(problem[1], key=problem[0], file=config.path)
            where = f"models.{name}.components.{cname}"
            spec = family.spec_of(component)
            if spec.contract is None:
                # no symbolic contract to resolve: the entry's shapes are the contract (a plain
                # block states them all, kiln.config checks that when it reads the block)
                for side, declared in (("inputs", spec.inputs), ("outputs", spec.outputs)):
                    given = {t.name: t for t in getattr(component, side)}
                    for tensor in declared:
                        if tensor not in given or given[tensor].shape is None or given[tensor].dtype is None:
                            raise ConfigError(f"the {model.family} family's {spec.name} declares no symbolic "
                                              f"contract (kiln.family.contract): give the shape and dtype of "
                                              f"{side[:-1]} '{tensor}'", key=f"{where}.{side}", file=config.path)
            raw = ((config.raw.get("models") or {}).get(name, {}).get("components") or {}).get(cname) or {}
            for output in ((raw.get("validate") or {}).get("outputs") or {}):
                if output not in spec.outputs:
                    raise ConfigError(f"no output '{output}' in the {model.family} family's {spec.name} "
                                      f"(outputs: {', '.join(spec.outputs)})",
                                      key=f"{where}.validate.outputs.{output}", file=config.path)
