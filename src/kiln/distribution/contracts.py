"""Consumer contracts: what the runtime that loads a family's models expects, checked against builds.

``contracts/<family>.yaml`` (schema: ``schemas/contract.schema.json``) declares, per component, the
file name the consumer loads (``Preprocessor``, ``320ms/streaming_encoder``, …), its feature names,
shapes and dtypes, the numbers it hard-codes (``params``: sample rate, state sizes) and its
control-token ids (``control_tokens``: blank, EOU, …), each bound to a fact of the build
(``prepared/facts.json``). A real model's facts must equal the consumer's numbers; a synthetic model
(random weights, smaller sizes) shares its family's contract with its own facts substituted, so
names, dtypes and layout are still checked.

:func:`check_model` compares the consumer's features with each component's contract as kiln's one
resolver gives it (:mod:`kiln.family.contract`, from the facts and the entry's options), and the built
model's real I/O (its ``.mlpackage`` specs and compiled ``.mlmodelc`` descriptions) with the same
resolution, both through one comparison (:func:`kiln.family.contract.differences`), and returns a JSON report; a mismatch raises
:class:`ContractMismatch` whose message is a readable diff. The publish layout takes its file names
from :func:`published_names`, never from a hand-written list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from kiln.foundation.errors import ContractError, KilnError

#: where the contracts live, relative to the checkout (one file per family)
CONTRACT_DIR = Path("contracts")
REPORT_SCHEMA_VERSION = 1


class ContractSchemaError(KilnError):
    """A contract file does not satisfy its schema, or names a component or feature its family does
    not build. Names the file and the key."""


class ContractMismatch(ContractError):
    """A built model does not give its consumer what the contract says. The message is the diff."""


def name_problem(name: str, *, folders: int = 0) -> str | None:
    """Why ``name`` cannot be a file name inside a published repo, or None: it must be a plain name
    (or ``folders`` folders and a plain name, ``/``-separated), no part empty, ``.``, ``..`` or hidden,
    no backslash, so whatever writes it stays inside the repo folder."""
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            return f"has the part {part!r}"
        if part.startswith(".") or "\\" in part or "\0" in part:
            return f"has the part {part!r} (hidden, or a backslash or NUL)"
    if len(parts) > folders + 1:
        return "holds a path separator" if not folders else f"has more than {folders} folder(s)"
    return None


def contract_path(family: str, root: str | Path = ".") -> Path:
    return Path(root) / CONTRACT_DIR / f"{family}.yaml"


def load_contract(path: str | Path, *, check_family: bool = True) -> dict:
    """Read and validate a contract: its schema, then its component and feature names against the
    family's component specs (an unknown component or feature is a :class:`ContractSchemaError`)."""
    from kiln import schemas
    from kiln.foundation import yamlio

    path = Path(path)
    try:
        data = yamlio.read(path)
    except yamlio.YamlFileError as exc:
        raise ContractSchemaError(str(exc)) from None
    _check_file_names(path, data)
    schemas.check(data, "contract", ContractSchemaError, str(path))
    for section in ("params", "control_tokens"):
        for name in data.get(section) or {}:
            if section == "params" and name in (data.get("control_tokens") or {}):
                raise ContractSchemaError(f"{path}: at 'params.{name}': also a control token")
    params = set(data.get("params") or {})
    for cname, comp in data["components"].items():
        for side in ("inputs", "outputs"):
            for fname, feature in comp[side].items():
                for dim in feature.get("shape") or []:
                    if isinstance(dim, str) and dim not in params:
                        raise ContractSchemaError(f"{path}: at 'components.{cname}.{side}.{fname}.shape': "
                                                  f"'{dim}' is not a param (params: {', '.join(sorted(params))})")
    if check_family:
        _check_against_family(path, data)
    return data


#: folders a component's published name may hold (FluidAudio loads ``320ms/streaming_encoder``)
FILE_FOLDERS = 1


def _check_file_names(path: Path, data: Any) -> None:
    """Every published name (component ``file``, side-file key) is a plain name: staging writes them
    inside the repo folder and nowhere else (the schema's patterns say the same; this names why)."""
    if not isinstance(data, dict):
        return
    named = [(f"components.{c}.file", comp.get("file"), FILE_FOLDERS)
             for c, comp in (data.get("components") or {}).items() if isinstance(comp, dict)] \
        if isinstance(data.get("components"), dict) else []
    named += [(f"files.{n}", n, 0) for n in (data.get("files") or {})] if isinstance(data.get("files"), dict) else []
    for where, name, folders in named:
        problem = name_problem(name, folders=folders) if isinstance(name, str) else None
        if problem:
            raise ContractSchemaError(f"{path}: at '{where}': {name!r} is not a plain file name ({problem}); "
                                      f"published files stay inside the model repo")


def _check_against_family(path: Path, data: Mapping[str, Any]) -> None:
    from kiln.family.registry import get_family

    family = get_family(data["family"])
    for cname, comp in data["components"].items():
        spec_name = comp.get("spec", cname)   # an entry of another name says which spec it is
        if spec_name not in family.component_names:
            at = f"components.{cname}" + (".spec" if "spec" in comp else "")
            raise ContractSchemaError(f"{path}: at '{at}': the {family.name} family builds no "
                                      f"component '{spec_name}' (it builds: {', '.join(family.component_names)})")
        spec = family.component(spec_name)
        for side, declared in (("inputs", spec.inputs), ("outputs", spec.outputs)):
            for fname in comp[side]:
                if fname not in declared:
                    raise ContractSchemaError(f"{path}: at 'components.{cname}.{side}.{fname}': {cname} has no "
                                              f"{side[:-1]} '{fname}' (it has: {', '.join(declared)})")
        for fname in comp.get("extra_inputs") or {}:
            if fname not in spec.inputs:
                raise ContractSchemaError(f"{path}: at 'components.{cname}.extra_inputs.{fname}': {cname} has "
                                          f"no input '{fname}' (it has: {', '.join(spec.inputs)})")


# -- resolving a contract for one model ---------------------------------------------------------------

def fact_value(facts: Mapping[str, Any], key: str):
    """``facts[key]``, where ``key.N`` indexes a list fact (e.g. ``h_shape.0``); None when absent."""
    name, _, index = key.partition(".")
    value = facts.get(name)
    if index and isinstance(value, list):
        return value[int(index)] if int(index) < len(value) else None
    return value


@dataclass(frozen=True)
class Binding:
    section: str        # params | control_tokens
    name: str
    consumer: int
    fact: str
    built: Any          # the build's fact
    synthetic: bool

    @property
    def value(self):
        """What shapes use: the consumer's number for a real model, the fact for a synthetic one."""
        return self.built if self.synthetic else self.consumer

    @property
    def ok(self) -> bool:
        if self.built is None or isinstance(self.built, bool) or not isinstance(self.built, int):
            return False
        return self.synthetic or self.built == self.consumer


def bindings(contract: Mapping[str, Any], facts: Mapping[str, Any], synthetic: bool) -> dict[str, Binding]:
    out = {}
    for section in ("params", "control_tokens"):
        for name, spec in (contract.get(section) or {}).items():
            out[name] = Binding(section, name, spec["consumer"], spec["fact"], fact_value(facts, spec["fact"]),
                                synthetic)
    return out


def expected_shape(shape: list | None, values: Mapping[str, Binding]) -> list | None:
    if shape is None:
        return None
    return [values[d].value if isinstance(d, str) else d for d in shape]


class SourceVersionMismatch(ContractError):
    """A real model's source release is not the one its consumer's contract expects."""


def source_version_problem(contract: Mapping[str, Any], source_version: str | None,
                           synthetic: bool) -> dict | None:
    """The contract's ``source_version`` against the build's source release (None when they agree,
    the contract pins none, or the model is synthetic: random weights come from no release)."""
    expected = contract.get("source_version")
    if expected is None or synthetic or source_version == expected:
        return None
    return {"where": "source_version", "expected": expected, "built": source_version or "none"}


def check_source_version(contract: Mapping[str, Any], *, model: str, source_version: str | None,
                         synthetic: bool, contract_file: str | Path) -> None:
    """Raise :class:`SourceVersionMismatch`, naming the contract, the expected and the found release,
    when a real model is built from another release than its consumer loads (the fetch job's check,
    before any build step)."""
    problem = source_version_problem(contract, source_version, synthetic)
    if problem:
        raise SourceVersionMismatch(
            f"{contract_file}: {contract['consumer']} loads source release {problem['expected']}, but model "
            f"'{model}' is built from {problem['built']} (set its source.version in config.yaml to "
            f"{problem['expected']}, or change the contract's source_version)")


def published_names(contract: Mapping[str, Any], components, source_version: str | None) -> dict[str, str]:
    """``{component: name in the published repo}`` (no suffix): the contract's file name for the
    components the consumer loads, the component's own name for the others."""
    names = {}
    for cname in components:
        entry = contract["components"].get(cname)
        if entry is None:
            names[cname] = cname
            continue
        template = entry["file"]
        if "{source_version}" in template and not source_version:
            raise ContractError(f"contract file name {template!r} of {cname} needs the source's version, and "
                                f"this source has none")
        names[cname] = template.replace("{source_version}", source_version or "")
        problem = name_problem(names[cname], folders=FILE_FOLDERS)
        if problem:
            raise ContractError(f"contract file name {template!r} of {cname} gives {names[cname]!r}, not a plain "
                                f"file name ({problem})")
    taken: dict[str, str] = {}
    for cname, name in names.items():
        if name in taken:
            raise ContractError(f"components {taken[name]} and {cname} would both be published as {name}")
        taken[name] = cname
    return names


# -- what a built artifact offers ---------------------------------------------------------------------

def _features(description) -> dict[str, dict[str, dict]]:
    """``{"inputs"|"outputs": {name: {shape, dtype}}}`` of a Core ML ModelDescription: what a consumer
    sees when it loads the model (feature names, multi-array shapes and data types)."""
    from kiln.coreml.proto import FeatureTypes_pb2

    def one(feature) -> dict:
        kind = feature.type.WhichOneof("Type")
        if kind != "multiArrayType":
            return {"shape": None, "dtype": kind}
        array = feature.type.multiArrayType
        dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType).lower()
        return {"shape": [int(d) for d in array.shape], "dtype": dtype}

    return {"inputs": {f.name: one(f) for f in description.input},
            "outputs": {f.name: one(f) for f in description.output}}


def artifact_features(path: str | Path) -> dict[str, dict[str, dict]]:
    """The I/O features of an ``.mlpackage`` (its spec) or ``.mlmodelc`` (its coremldata.bin)."""
    from kiln.mil.model import load_model

    return _features(load_model(path).description)


# -- the check --------------------------------------------------------------------------------------

#: how a consumer-vs-kiln difference names kiln's side: the component's contract resolved by the
#: family's one resolver (kiln.family.contract) from the facts and the entry's options
RESOLVED = "kiln's contract"


def _consumer_expects(entry: Mapping[str, Any], values: Mapping[str, Binding]) -> dict:
    """The consumer entry's features with its params bound (``{"inputs"|"outputs": {name: {shape, dtype}}}``)."""
    return {side: {name: {"shape": expected_shape(spec.get("shape"), values), "dtype": spec["dtype"]}
                   for name, spec in entry[side].items()} for side in ("inputs", "outputs")}


def check_component(cname: str, entry: Mapping[str, Any], resolved: Mapping[str, dict],
                    features_by_artifact: Mapping[str, dict], values: Mapping[str, Binding]) -> dict:
    """One component against its consumer contract entry, through the one comparison
    (:func:`kiln.family.contract.differences`): the consumer's features (params bound) against the
    component's ``resolved`` contract (every one present with its shape and dtype; no input the
    consumer does not feed unless declared under ``extra_inputs``), then every built artifact
    (``{label: features}``, see :func:`artifact_features`) against the same resolved contract: the
    real package I/O is the contract's, feature for feature."""
    from kiln.family.contract import differences

    result = {"file": entry["file"], "artifacts": {}, "problems": []}
    extra = dict(entry.get("extra_inputs") or {})
    problems = differences(_consumer_expects(entry, values), resolved, f"{cname} ({RESOLVED})")
    for name in resolved["inputs"]:
        if name not in entry["inputs"] and name not in extra:
            problems.append({"where": f"{cname} ({RESOLVED}).inputs.{name}", "expected": "not an input (the consumer "
                             "does not feed it; declare it under extra_inputs with the reason)",
                             "built": resolved["inputs"][name]})
    for label, features in features_by_artifact.items():
        where = f"{cname} ({label})"
        problems += differences(resolved, features, where)
        for side in ("inputs", "outputs"):
            for name in features[side]:
                if name not in resolved[side]:
                    problems.append({"where": f"{where}.{side}.{name}", "expected": f"not an {side[:-1]} of "
                                     f"{RESOLVED}", "built": features[side][name]})
        result["artifacts"][label] = {"features": features}
    result["problems"] = problems
    result["resolved"] = {side: dict(resolved[side]) for side in ("inputs", "outputs")}
    result["extra_inputs"] = extra
    return result


def check_model(contract: Mapping[str, Any], *, model: str, components, synthetic: bool,
                facts: Mapping[str, Any], resolved: Mapping[str, Mapping[str, dict]],
                artifacts: Mapping[str, Mapping[str, Mapping[str, dict]]],
                source_version: str | None, contract_file: str = "", specs: Mapping[str, str] | None = None) -> dict:
    """The contract report of one model. ``resolved``: ``{component: {"inputs"|"outputs": {name:
    {shape, dtype}}}}``, each component's contract as the family's resolver gives it from the facts
    and options (:meth:`kiln.family.spec.FamilySpec.resolved_contract`; a config block's own shapes
    for family plain); ``artifacts``: ``{component: {label: features}}`` (labels such as the
    package's and bundle's file names; features from :func:`artifact_features`; empty for a check
    before building); ``specs``: the family spec each configured component builds (config.yaml's
    ``spec``), checked against the contract entry's. Raises :class:`ContractMismatch` (a diff) when
    anything differs."""
    values = bindings(contract, facts, synthetic)
    problems = []
    version_problem = source_version_problem(contract, source_version, synthetic)
    if version_problem:
        problems.append(version_problem)
    for binding in values.values():
        if not binding.ok:
            problems.append({"where": f"{binding.section}.{binding.name} (fact {binding.fact})",
                             "expected": binding.consumer, "built": binding.built})
    report_components = {}
    for cname, entry in contract["components"].items():
        if cname not in components:
            if not entry.get("optional"):
                problems.append({"where": f"components.{cname}", "expected": f"built (published as "
                                 f"{entry['file']})", "built": "not configured for this model"})
            continue
        if specs is not None and specs.get(cname, cname) != entry.get("spec", cname):
            problems.append({"where": f"components.{cname}.spec", "expected": entry.get("spec", cname),
                             "built": specs.get(cname, cname)})
        checked = check_component(cname, entry, resolved[cname], artifacts.get(cname, {}), values)
        problems += checked.pop("problems")
        report_components[cname] = checked
    names = published_names(contract, components, source_version)
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": model,
        "consumer": contract["consumer"],
        "contract": contract_file,
        "synthetic": synthetic,
        "bindings": {n: {"section": b.section, "consumer": b.consumer, "fact": b.fact, "built": b.built,
                         "used": b.value, "ok": b.ok} for n, b in values.items()},
        "source_version": {"contract": contract.get("source_version"), "built": source_version},
        "published_names": names,
        "components": report_components,
        "problems": problems,
        "passed": not problems,
    }
    if problems:
        raise ContractMismatch(format_diff(model, contract["consumer"], contract_file, problems))
    return report


def format_diff(model: str, consumer: str, contract_file: str, problems: list[dict]) -> str:
    lines = [f"{model} does not match {consumer}'s contract ({contract_file}): {len(problems)} difference(s)"]
    for p in problems:
        lines.append(f"  {p['where']}" + (f" (axis {p['axis']})" if "axis" in p else "") + ":")
        lines.append(f"    - contract: {_show(p['expected'])}")
        lines.append(f"    + built:    {_show(p['built'])}")
        if "available" in p:
            lines.append(f"      (it has: {', '.join(p['available'])})")
    return "\n".join(lines)


def _show(value) -> str:
    if isinstance(value, dict) and set(value) == {"shape", "dtype"}:
        shape = "?" if value["shape"] is None else "[" + ", ".join("*" if d is None else str(d)
                                                                    for d in value["shape"]) + "]"
        return f"{shape} {value['dtype']}"
    return json.dumps(value) if not isinstance(value, str) else value


# -- files the consumer loads beside the bundles -------------------------------------------------------

def write_side_files(contract: Mapping[str, Any], facts: Mapping[str, Any], out_dir: Path) -> list[str]:
    """Write the contract's ``files`` (e.g. ``parakeet_vocab.json``) from the facts into ``out_dir``."""
    from kiln.foundation.fsutil import write_json

    written = []
    for name, spec in (contract.get("files") or {}).items():
        value = fact_value(facts, spec["fact"])
        if value is None:
            raise ContractError(f"contract file {name} needs the fact '{spec['fact']}', which this build lacks")
        if spec["format"] == "id_to_token":
            value = {str(i): token for i, token in enumerate(value)}
        write_json(out_dir / name, value)
        written.append(name)
    return written
