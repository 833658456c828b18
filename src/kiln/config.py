"""Load and validate ``config.yaml``.

Validation happens before any job runs: the JSON schema (``kiln/schemas/config.schema.json``) checks
keys, types and values; a few cross-field rules follow. Every failure is a :class:`ConfigError` that
names the key path, e.g. ``models.silero_vad.components.unified.export.compute_precision``.

This module is imported by the Snakefile on every invocation, so it stays light: no torch, no
coremltools.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field, replace as _replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from kiln.foundation import yamlio
from kiln.foundation.errors import ConfigError


DEFAULT_EXPORT = {
    "deployment_target": "iOS17",
    "compute_precision": "float16",
    "compute_units": "CPU_ONLY",
    "runtime_compute_units": ["cpuAndNeuralEngine", "cpuAndGPU", "all"],
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a component's fixed I/O contract."""

    name: str
    #: None: not stated (a family entry's shapes and dtypes come from its family's resolved contract)
    shape: tuple[int, ...] | None
    dtype: str | None
    #: what an output is (``kiln.validate.kinds``: probability, embedding, ...); None: not declared
    kind: str | None = None

    def as_dict(self) -> dict:
        # no ``kind``: it judges the output, it does not build it (the parity and quantize stamps
        # carry it, so a package is not re-exported when a kind changes)
        out = {"name": self.name}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.dtype is not None:
            out["dtype"] = self.dtype
        return out


@dataclass(frozen=True)
class ExportSettings:
    deployment_target: str
    compute_precision: str
    compute_units: str
    runtime_compute_units: tuple[str, ...]
    # ops (by MIL name, as the fp16 report names them) kept in fp32 under fp16 compute precision
    fp32_ops: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        out = {
            "deployment_target": self.deployment_target,
            "compute_precision": self.compute_precision,
            "compute_units": self.compute_units,
            "runtime_compute_units": list(self.runtime_compute_units),
        }
        if self.fp32_ops:   # only when configured: the settings digest of other exports stays as it was
            out["fp32_ops"] = list(self.fp32_ops)
        return out


DEFAULT_QUANTIZE = {
    "strategies": ["int8_per_channel", "int8_per_tensor", "palettize_8bit", "palettize_6bit", "palettize_4bit",
                   "prune_50_int8", "int4_per_block", "palettize_4bit_grouped"],
    "weight_threshold": 2048,
    "skip_ops": [],
    "params": {},
}

DEFAULT_COMPILE = {"compiler": "auto", "dialect": "1.0"}

DEFAULT_VALIDATE = {
    "atol": 1e-3,
    "rtol": 1e-2,
    "min_psnr_db": 35.0,
    "min_agreement": 1.0,
    "report_only": False,
    "precisions": ["fp32", "fp16"],
    "report_only_backends": [],
    "outputs": {},
}


@dataclass(frozen=True)
class ValidateSettings:
    atol: float
    rtol: float
    min_psnr_db: float | None
    report_only: bool
    precisions: tuple[str, ...]
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    report_only_backends: tuple[str, ...] = ()
    min_agreement: float = 1.0
    #: task metric (dotted path in task_metrics, named min_* or max_*) -> {"fp32"/"fp16": bound}
    task_bounds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def tolerance(self, output: str) -> dict:
        """atol/rtol/min_psnr_db/min_agreement for one output, with its overrides applied."""
        base = {"atol": self.atol, "rtol": self.rtol, "min_psnr_db": self.min_psnr_db,
                "min_agreement": self.min_agreement}
        return {**base, **dict(self.outputs.get(output, {}))}

    def as_dict(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "min_psnr_db": self.min_psnr_db,
                "min_agreement": self.min_agreement, "report_only": self.report_only, "precisions": list(self.precisions),
                "report_only_backends": list(self.report_only_backends),
                "outputs": {k: dict(v) for k, v in self.outputs.items()},
                # only when configured: the parity stamps of components without bounds stay as they were
                **({"task_bounds": {k: dict(v) for k, v in self.task_bounds.items()}} if self.task_bounds else {})}


@dataclass(frozen=True)
class ComponentConfig:
    model: str
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    export: ExportSettings
    validate: ValidateSettings
    quantize: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: the family component spec this entry instantiates (config.yaml's ``spec``; default: ``name``):
    #: entries of one spec differ by their options (EOU's ``streaming_encoder_160ms`` is a
    #: ``streaming_encoder`` with ``chunk_ms: 160``); ``name`` stays the file name
    spec: str = ""
    #: family ``plain``: state pairs (input -> the output fed back to it) and validation feeds
    state: Mapping[str, str] = field(default_factory=dict)
    feeds: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: family ``plain``: task metrics of the user's own ({name, function: "pkg.mod:callable", rank_by})
    metrics: tuple = ()

    def __post_init__(self):
        if not self.spec:
            object.__setattr__(self, "spec", self.name)

    @property
    def kinds(self) -> dict[str, str]:
        """Declared output kinds, by output name."""
        return {t.name: t.kind for t in self.outputs if t.kind is not None}

    def contract(self) -> dict:
        return {
            "inputs": [t.as_dict() for t in self.inputs],
            "outputs": [t.as_dict() for t in self.outputs],
        }

    def bound(self, resolved: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> "ComponentConfig":
        """This entry with its inputs and outputs from ``resolved`` (``{"inputs"|"outputs": {name:
        {"shape", "dtype"}}}``, the prepare job's contracts file), in that order; the outputs keep
        the ``kind`` the entry declares. Shapes config.yaml states were checked against the same
        resolution by the prepare job."""
        kinds = self.kinds
        return _replace(self,
                        inputs=tuple(TensorSpec(n, tuple(t["shape"]), t["dtype"])
                                     for n, t in resolved["inputs"].items()),
                        outputs=tuple(TensorSpec(n, tuple(t["shape"]), t["dtype"], kinds.get(n))
                                      for n, t in resolved["outputs"].items()))


@dataclass(frozen=True)
class ModelConfig:
    name: str
    family: str
    task: str
    synthetic: bool
    source: Mapping[str, Any]
    components: Mapping[str, ComponentConfig]
    compile: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COMPILE))
    mem_mb: int = 4000
    enabled: bool = True
    #: family ``plain``: what the source file is and how it becomes a network
    network: Mapping[str, Any] | None = None
    #: where the config file is (family ``plain`` resolves an ``npz`` feed's path against it)
    config_dir: str = "."


@dataclass(frozen=True)
class Config:
    path: str
    results_dir: str
    models: Mapping[str, ModelConfig]
    raw: Mapping[str, Any]
    #: task labels this file adds to the registry (``kiln.tasks``)
    tasks: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled_models(self) -> list[str]:
        """Models built by the aggregate targets (``enabled: false`` ones only when named)."""
        return [name for name, model in self.models.items() if model.enabled]

    def bound(self, model: str, contracts: Mapping[str, Any], file: str = "contracts.json") -> "Config":
        """This config with ``model``'s components bound to the prepare job's resolved ``contracts``
        (``{component: {"inputs"|"outputs": {name: {"shape", "dtype"}}}}``): what every job after
        prepare builds and judges with. A component the file lacks is a :class:`ConfigError` (a
        contracts file of another configuration: re-run the prepare job)."""
        model_cfg = self.model(model)
        missing = [c for c in model_cfg.components if c not in contracts]
        if missing:
            raise ConfigError(f"{file} has no resolved contract for {missing} (written for components "
                              f"{sorted(contracts)}; re-run the prepare job)", key=f"models.{model}.components",
                              file=self.path)
        components = {n: c.bound(contracts[n]) for n, c in model_cfg.components.items()}
        return _replace(self, models={**self.models, model: _replace(model_cfg, components=components)})

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"no model named '{name}' (configured: {sorted(self.models)})",
                              key=f"models.{name}", file=self.path) from None

    def component(self, model: str, component: str) -> ComponentConfig:
        components = self.model(model).components
        try:
            return components[component]
        except KeyError:
            raise ConfigError(f"model '{model}' has no component '{component}' "
                              f"(configured: {sorted(components)})",
                              key=f"models.{model}.components.{component}", file=self.path) from None


def _schema() -> dict:
    from kiln import schemas

    return schemas.load("config")


def strategy_names() -> tuple[str, ...]:
    """The quantization strategies a config may name (the schema's enum, equal to the registry
    ``kiln.quantize.strategies.STRATEGIES``, tested), without importing the registry (numpy)."""
    return tuple(_schema()["$defs"]["strategy_name"]["enum"])


def _key_path(error: "jsonschema.ValidationError") -> str:
    parts = [str(p) for p in error.absolute_path]
    # For unexpected keys jsonschema points at the parent object; name the offending key itself.
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            parts.append(extra[0])
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        if missing:
            parts.append(missing[0])
    return ".".join(parts) or "<root>"


def _describe(error: "jsonschema.ValidationError") -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    if error.validator == "required":
        return "required key is missing"
    return error.message


def _non_finite(node: Any, key_path: str = "") -> Iterator[str]:
    """Key paths of NaN and infinite numbers (JSON schema's "number" accepts them)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield key_path
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _non_finite(value, f"{key_path}.{key}" if key_path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite(value, f"{key_path}[{index}]")


def validate_raw(raw: Any, path: str = "config.yaml") -> None:
    """Check ``raw`` against the schema; raise :class:`ConfigError` naming the deepest failing key."""
    for key in _non_finite(raw):
        raise ConfigError("numbers must be finite (NaN and infinity are not tolerances or sizes)", key=key,
                          file=path)
    import jsonschema   # here, not at import: a start-up whose config validated before skips it (74 ms)

    validator = jsonschema.Draft202012Validator(_schema())
    errors = list(validator.iter_errors(raw))
    if not errors:
        return
    # Report the most specific error first (deepest path), as users fix one thing at a time.
    errors.sort(key=lambda e: (-len(list(e.absolute_path)), str(list(e.absolute_path))))
    best = jsonschema.exceptions.best_match(errors, key=lambda e: -len(list(e.absolute_path)))
    others = len(errors) - 1
    suffix = f" ({others} more problem{'s' if others != 1 else ''})" if others else ""
    raise ConfigError(_describe(best) + suffix, key=_key_path(best), file=path)


def _merge_export(*layers: Mapping[str, Any] | None) -> ExportSettings:
    merged = dict(DEFAULT_EXPORT)
    for layer in layers:
        merged.update(layer or {})
    return ExportSettings(
        deployment_target=merged["deployment_target"],
        compute_precision=merged["compute_precision"],
        compute_units=merged["compute_units"],
        runtime_compute_units=tuple(merged["runtime_compute_units"]),
        fp32_ops=tuple(merged.get("fp32_ops", ())),
    )


def _merge_validate(*layers: Mapping[str, Any] | None) -> ValidateSettings:
    merged = dict(DEFAULT_VALIDATE)
    outputs: dict[str, dict] = {}
    bounds: dict[str, dict] = {}
    for layer in layers:
        layer = dict(layer or {})
        for name, override in (layer.pop("outputs", None) or {}).items():
            outputs.setdefault(name, {}).update(override)
        for name, override in (layer.pop("task_bounds", None) or {}).items():
            bounds.setdefault(name, {}).update(override)
        merged.update(layer)
    return ValidateSettings(atol=float(merged["atol"]), rtol=float(merged["rtol"]),
                            min_psnr_db=merged["min_psnr_db"], report_only=bool(merged["report_only"]),
                            precisions=tuple(merged["precisions"]), outputs=outputs,
                            report_only_backends=tuple(merged["report_only_backends"]),
                            min_agreement=float(merged["min_agreement"]), task_bounds=bounds)


def _merge_quantize(*layers: Mapping[str, Any] | None) -> dict:
    merged = copy.deepcopy(DEFAULT_QUANTIZE)
    for layer in layers:
        layer = dict(layer or {})
        params = layer.pop("params", None) or {}
        merged.update(copy.deepcopy(layer))
        for name, values in params.items():
            merged["params"].setdefault(name, {}).update(values)
    return merged


def _tensors(spec: Mapping[str, Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, None if t.get("shape") is None else tuple(t["shape"]), t.get("dtype"), t.get("kind"))
                 for name, t in (spec or {}).items())


def family_exists(family: str) -> bool:
    """Whether the family package ``kiln/models/<family>/`` exists, without importing it (keeps workflow start fast)."""
    return importlib.util.find_spec(f"kiln.models.{family}") is not None


#: environment variable that lets ``results_dir`` point outside the checkout
ALLOW_RESULTS_OUTSIDE_ENV = "KILN_ALLOW_RESULTS_OUTSIDE"


def check_results_dir(results_dir: str, path: str) -> None:
    """``results_dir`` must stay inside the checkout (the config file's directory): the workflow
    writes, replaces and (DVC) publishes everything below it. ``KILN_ALLOW_RESULTS_OUTSIDE=1``
    allows another place explicitly."""
    if os.environ.get(ALLOW_RESULTS_OUTSIDE_ENV) == "1":
        return
    checkout = Path(os.path.abspath(path)).parent
    target = Path(os.path.normpath(checkout / results_dir))
    if Path(results_dir).is_absolute() or target == checkout or checkout not in target.parents:
        raise ConfigError(f"{results_dir!r} is not a directory inside the checkout {checkout} (set "
                          f"{ALLOW_RESULTS_OUTSIDE_ENV}=1 to write results elsewhere on purpose)",
                          key="results_dir", file=path)
    resolved = target.resolve()
    if checkout.resolve() not in resolved.parents:
        raise ConfigError(f"{results_dir!r} resolves to {resolved} through a symlink, outside the checkout "
                          f"(set {ALLOW_RESULTS_OUTSIDE_ENV}=1 to allow it)", key="results_dir", file=path)


def _read_yaml(path: Path) -> Any:
    """``path`` parsed strictly and within bounds (:mod:`kiln.foundation.yamlio`: duplicate keys, alias bombs,
    deep nesting, non-UTF-8 bytes refused), every failure a :class:`ConfigError` naming the file."""
    try:
        return yamlio.read(path)
    except yamlio.YamlFileError as exc:
        raise ConfigError(exc.reason, key=None if exc.key is None else str(exc.key), file=str(path)) from None


#: what the Snakefile's start-up checked before, by content: the sha256 of config texts that passed
#: the strict, bounded read (every `snakemake` call reads config.yaml strictly twice: before
#: Snakemake's loader, and in build_config) and of parsed configs that passed the schema
CHECKS_CACHE = Path(".kiln") / "cache" / "config_checks.json"
_CHECKS_KEPT = 16


def _checked(cache: Path | None, kind: str, digest: str) -> bool:
    if cache is None:
        return False
    try:
        return digest in json.loads(cache.read_text())[kind]
    except (OSError, ValueError, TypeError, KeyError):
        return False   # no cache yet, or unreadable: check again


def _remember_check(cache: Path | None, kind: str, digest: str) -> None:
    if cache is None:
        return
    from kiln.foundation.fsutil import write_json

    try:
        known = json.loads(cache.read_text())
        known = {k: [d for d in v if isinstance(d, str)] for k, v in known.items() if isinstance(v, list)}
    except (OSError, ValueError, TypeError, AttributeError):
        known = {}
    known[kind] = [*known.get(kind, []), digest][-_CHECKS_KEPT:]
    write_json(cache, known, sort_keys=True)


def _read_strictly(path: Path, cache: Path | None) -> None:
    """:func:`_read_yaml` of ``path``, skipped when ``cache`` records that the same text already
    passed (the outcome of a strict read depends on the bytes alone)."""
    try:
        text = yamlio.read_text(path)
    except yamlio.YamlFileError as exc:
        raise ConfigError(exc.reason, file=str(path)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()
    if _checked(cache, "strict_reads", digest):
        return
    try:
        yamlio.parse(path, text)
    except yamlio.YamlFileError as exc:
        raise ConfigError(exc.reason, key=None if exc.key is None else str(exc.key), file=str(path)) from None
    _remember_check(cache, "strict_reads", digest)


def check_config_file(path: str | Path = "config.yaml", cache: Path | None = None) -> None:
    """Read ``path`` (when it exists) within bounds before Snakemake's own loader does: Snakemake
    merges a config into its defaults key by key and would walk an alias bomb's expansion for
    minutes, or die of a ``RecursionError`` on deep nesting, before kiln sees the file. With
    ``cache`` (:data:`CHECKS_CACHE`), a text that passed before is not parsed again."""
    if Path(path).is_file():
        _read_strictly(Path(path), cache)


def build_config(raw: Mapping[str, Any], path: str = "config.yaml", cache: Path | None = None) -> Config:
    """A checked :class:`Config` from ``raw``, the parsed content of the file ``path``.

    When ``raw`` was parsed by someone else (Snakemake's ``configfile:`` loader keeps the last of
    two equal keys), the file is read again strictly so that a duplicate key is still refused
    (``cache``: as for :func:`check_config_file`)."""
    if Path(path).is_file():
        _read_strictly(Path(path), cache)
    return _build(raw, path, cache)


def _build(raw: Mapping[str, Any], path: str, cache: Path | None = None) -> Config:
    # the schema's verdict on the same parsed config under the same schema is the same
    digest = hashlib.sha256((canonical_json(raw) + canonical_json(_schema())).encode()).hexdigest()
    if not _checked(cache, "validated", digest):
        validate_raw(raw, path)
        _remember_check(cache, "validated", digest)
    check_results_dir(raw.get("results_dir", "results"), path)
    defaults = (raw.get("defaults") or {}).get("export")
    validate_defaults = (raw.get("defaults") or {}).get("validate")
    models = {}
    for name, model in raw["models"].items():
        if not family_exists(model["family"]):
            raise ConfigError(f"no model family module 'kiln.models.{model['family']}'",
                              key=f"models.{name}.family", file=path)
        is_random = model["source"]["kind"] == "random"
        for cname, comp in model["components"].items():
            if model["family"] != PLAIN_FAMILY:
                continue   # a family's output names are its spec's: kiln.models.check_models checks these
            declared = {o for o in comp.get("outputs") or {}}
            for output in (comp.get("validate") or {}).get("outputs", {}):
                if output not in declared:
                    raise ConfigError(f"no output '{output}' in the component's contract "
                                      f"(outputs: {', '.join(declared)})",
                                      key=f"models.{name}.components.{cname}.validate.outputs.{output}",
                                      file=path)
        _check_feature_names(name, model, path)
        _check_plain(name, model, path)
        if is_random and model.get("synthetic") is False:
            raise ConfigError("a random-initialised source is synthetic; remove 'synthetic: false'",
                              key=f"models.{name}.synthetic", file=path)
        components = {
            cname: ComponentConfig(
                model=name,
                name=cname,
                inputs=_tensors(comp.get("inputs")),
                outputs=_tensors(comp.get("outputs")),
                export=_merge_export(defaults, model.get("export"), comp.get("export")),
                validate=_merge_validate(validate_defaults, model.get("validate"), comp.get("validate")),
                quantize=_merge_quantize((raw.get("defaults") or {}).get("quantize"), model.get("quantize"),
                                         comp.get("quantize")),
                options=dict(comp.get("options") or {}),
                description=comp.get("description", ""),
                spec=comp.get("spec", cname),
                state=dict(comp.get("state") or {}),
                feeds={k: dict(v) for k, v in (comp.get("feeds") or {}).items()},
                metrics=tuple(dict(m) for m in comp.get("metrics") or ()),
            )
            for cname, comp in model["components"].items()
        }
        models[name] = ModelConfig(
            name=name,
            family=model["family"],
            task=model["task"],
            synthetic=bool(model.get("synthetic", False) or is_random),
            source=dict(model["source"]),
            components=components,
            compile={**DEFAULT_COMPILE, **((raw.get("defaults") or {}).get("compile") or {}),
                     **(model.get("compile") or {})},
            mem_mb=int((model.get("resources") or {}).get("mem_mb", 4000)),
            enabled=bool(model.get("enabled", True)),
            network=dict(model["network"]) if model.get("network") else None,
            config_dir=str(Path(path).parent),
        )
    return Config(path=str(path), results_dir=raw.get("results_dir", "results"), models=models,
                  raw=copy.deepcopy(dict(raw)), tasks=dict(raw.get("tasks") or {}))


#: the generic family built from a config block alone (``kiln.models.plain``)
PLAIN_FAMILY = "plain"
#: what each network kind needs (besides ``kind``) and allows
_NETWORK_KEYS = {"torchscript": ((), ("submodule",)),
                 "module": (("factory",), ("kwargs", "weights_kwarg", "state_dict")),
                 "onnx": ((), ())}


#: names coremltools silently renames (its MIL keywords get ``_workaround`` appended, a leading ``_``
#: becomes ``var_``): a contract using one would not be the package's interface
RESERVED_FEATURE_NAMES = frozenset({
    "any", "bool", "program", "func", "tensor", "list", "dict", "tuple", "true", "false", "string", "bf16",
    "fp16", "fp32", "fp64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "state"})


def _check_feature_names(name: str, model: Mapping[str, Any], path: str) -> None:
    for cname, comp in model["components"].items():
        for side in ("inputs", "outputs"):
            for tensor in comp.get(side) or {}:
                if tensor in RESERVED_FEATURE_NAMES or tensor.startswith("_"):
                    raise ConfigError(f"'{tensor}' is a name coremltools renames in the package (a MIL "
                                      f"keyword or a leading underscore); choose another",
                                      key=f"models.{name}.components.{cname}.{side}.{tensor}", file=path)


def _check_plain(name: str, model: Mapping[str, Any], path: str) -> None:
    """``network``, ``state`` and ``feeds`` belong to family ``plain`` (which needs ``network``);
    each network kind takes its own keys."""
    where = f"models.{name}"
    network = model.get("network")
    if model["family"] != PLAIN_FAMILY:
        if network is not None:
            raise ConfigError(f"only family '{PLAIN_FAMILY}' is built from a network block (family "
                              f"{model['family']} builds its own)", key=f"{where}.network", file=path)
        for cname, comp in model["components"].items():
            for key in ("state", "feeds", "metrics"):
                if key in comp:
                    raise ConfigError(f"only family '{PLAIN_FAMILY}' takes '{key}' from config.yaml (family "
                                      f"{model['family']} declares its own)",
                                      key=f"{where}.components.{cname}.{key}", file=path)
        return
    if network is None:
        raise ConfigError("family 'plain' needs a network block (kind: torchscript | module | onnx)",
                          key=f"{where}.network", file=path)
    required, optional = _NETWORK_KEYS[network["kind"]]
    for key in required:
        if key not in network:
            raise ConfigError(f"a {network['kind']} network needs '{key}'", key=f"{where}.network.{key}", file=path)
    for key in network:
        if key != "kind" and key not in required + optional:
            raise ConfigError(f"not a key of a {network['kind']} network (it takes: "
                              f"{', '.join(required + optional) or 'nothing but kind'})",
                              key=f"{where}.network.{key}", file=path)
    if network.get("weights_kwarg") and network.get("state_dict"):
        raise ConfigError("give the checkpoint either to the factory (weights_kwarg) or to load_state_dict "
                          "(state_dict: true), not both", key=f"{where}.network.state_dict", file=path)
    if (network["kind"] == "onnx") != (model["source"]["kind"] == "onnx"):
        raise ConfigError(f"a network of kind {network['kind']} needs "
                          f"{'an onnx' if network['kind'] == 'onnx' else 'a non-onnx'} source",
                          key=f"{where}.network.kind", file=path)
    for cname, comp in model["components"].items():
        at = f"{where}.components.{cname}"
        # a config block is the model's one statement of its contract: every tensor, sized and typed
        for side in ("inputs", "outputs"):
            if not comp.get(side):
                raise ConfigError(f"family '{PLAIN_FAMILY}' states its contract in config.yaml: give the "
                                  f"component's {side} (name: {{shape, dtype}})", key=f"{at}.{side}", file=path)
            for tensor, spec in comp[side].items():
                for key in ("shape", "dtype"):
                    if key not in spec:
                        raise ConfigError(f"family '{PLAIN_FAMILY}' needs every tensor's {key}",
                                          key=f"{at}.{side}.{tensor}.{key}", file=path)
        for inp, out in (comp.get("state") or {}).items():
            if inp not in comp["inputs"]:
                raise ConfigError(f"state input '{inp}' is not an input of the component (inputs: "
                                  f"{', '.join(comp['inputs'])})", key=f"{at}.state.{inp}", file=path)
            if out not in comp["outputs"]:
                raise ConfigError(f"state output '{out}' is not an output of the component (outputs: "
                                  f"{', '.join(comp['outputs'])})", key=f"{at}.state.{inp}", file=path)
            if comp["inputs"][inp]["shape"] != comp["outputs"][out]["shape"]:
                raise ConfigError(f"state pair {inp} -> {out}: shapes {comp['inputs'][inp]['shape']} and "
                                  f"{comp['outputs'][out]['shape']} differ", key=f"{at}.state.{inp}", file=path)
        for inp in comp.get("feeds") or {}:
            if inp not in comp["inputs"] or inp in (comp.get("state") or {}):
                raise ConfigError(f"'{inp}' is not a non-state input of the component",
                                  key=f"{at}.feeds.{inp}", file=path)


def load_config(path: str | Path = "config.yaml") -> Config:
    path = Path(path)
    raw = _read_yaml(path)
    return _build(raw if raw is not None else {}, str(path))


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def settings_digest(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def source_settings(model: ModelConfig) -> dict:
    """Everything that determines a model's fetched source (the fetch job's stamp)."""
    return {"family": model.family, "source": dict(model.source), "synthetic": model.synthetic}


def prepare_settings(model: ModelConfig) -> dict:
    """Everything that determines the traced programs and the reference files of a model (the
    prepare and reference jobs' stamp): the source and each component's contract and options (and,
    for family ``plain``, its network, state pairs and feeds; absent keys keep other digests)."""
    def component(c: ComponentConfig) -> dict:
        entry = {"contract": c.contract(), "options": dict(c.options)}
        if c.spec != c.name:   # only when given: other digests stay as they were
            entry["spec"] = c.spec
        if c.state:
            entry["state"] = dict(c.state)
        if c.feeds:
            entry["feeds"] = {k: _feed_settings(model, v) for k, v in c.feeds.items()}
        return entry

    out = {"source": source_settings(model),
           "components": {name: component(c) for name, c in model.components.items()}}
    if model.network is not None:
        out["network"] = dict(model.network)
    return out


def _feed_file(model: ModelConfig, feed: Mapping[str, Any]) -> Path | None:
    """The recorded ``.npz`` a feed reads (resolved against the config's folder), or None."""
    if feed.get("modality") != "npz":
        return None
    return Path(feed["path"]) if Path(feed["path"]).is_absolute() else Path(model.config_dir) / feed["path"]


def settings_files(config: Config) -> list[Path]:
    """Files whose *content* the settings stamps read (recorded ``.npz`` feeds): whoever caches the
    stamps must watch them too (kiln.workflow.startup)."""
    return sorted({path for model in config.models.values() for c in model.components.values()
                   for feed in c.feeds.values() if (path := _feed_file(model, feed)) is not None})


def _feed_settings(model: ModelConfig, feed: Mapping[str, Any]) -> dict:
    """A feed's settings; a recorded ``.npz`` also by its content, so new recordings re-run the
    reference job (a missing file is the reference job's error to name)."""
    out = dict(feed)
    path = _feed_file(model, feed)
    if path is not None:
        try:
            out["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            out["sha256"] = None
    return out


#: options (typed in the schema, shared by every family) that only size a component's contract: a
#: family that takes one checks the contract's shapes against it, so the contract in a stamp
#: determines it (and a package exported before the option existed keeps its bytes)
CONTRACT_SIZED_OPTIONS = frozenset({"chunk_ms", "seconds", "max_tokens"})


def export_settings(model: ModelConfig, component: ComponentConfig, *, contract: bool = True) -> dict:
    """Everything that determines one exported package; its digest, with ``component`` bound to its
    resolved contract (:meth:`Config.bound`), is embedded in the package. Options that only size
    the contract (:data:`CONTRACT_SIZED_OPTIONS`) reach the package through the contract's shapes
    and are not recorded twice; the spec an entry names reaches it through the traced program (the
    prepare stamp).

    ``contract=False``: the export job's stamp and its record's ``settings_sha256``, known when the
    workflow is planned, before the prepare job resolves the shapes: the contract reaches the export
    through its inputs instead (the traced program and ``prepared/contracts.json``)."""
    out = {
        "source": source_settings(model),
        "component": component.name,
        "contract": component.contract(),
        "options": {k: v for k, v in component.options.items() if k not in CONTRACT_SIZED_OPTIONS},
        # runtime compute units are chosen by the app at load time: they do not change the package
        "export": {k: v for k, v in component.export.as_dict().items() if k != "runtime_compute_units"},
    }
    if not contract:
        del out["contract"]
    return out


def validate_settings(model: ModelConfig, component: ComponentConfig) -> dict:
    """Everything that determines one component's parity report (the parity job's stamp)."""
    out = {
        "component": component.name,
        "validate": component.validate.as_dict(),
        "runtime_compute_units": list(component.export.runtime_compute_units),
    }
    if component.kinds:   # what judges each output
        out["kinds"] = component.kinds
    if component.metrics:   # family plain: the user's own metrics (absent: other digests unchanged)
        out["metrics"] = [dict(m) for m in component.metrics]
    return out


def compile_settings(model: ModelConfig, component: ComponentConfig) -> dict:
    """Everything that determines one compiled bundle (the compile job's stamp)."""
    return {"component": component.name, "compile": dict(model.compile)}


def quantize_settings(model: ModelConfig, component: ComponentConfig, strategy: str) -> dict:
    """Everything that determines one quantized variant and its scores (the quantize job's stamp)."""
    q = component.quantize
    return {
        "component": component.name,
        "strategy": strategy,
        "weight_threshold": q["weight_threshold"],
        "skip_ops": list(q["skip_ops"]),
        "params": dict(q["params"].get(strategy, {})),
        "compile": dict(model.compile),
        **({"kinds": component.kinds} if component.kinds else {}),
    }
