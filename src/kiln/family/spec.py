"""Declarative model families: a family is its list of components, each a :class:`ComponentSpec`.

Like optimum's per-model export configs, a component says what it is, not how the workflow runs it:

- ``inputs`` / ``outputs``: the contract's names, in ``forward()`` order, and ``contract``: its
  symbolic shapes and dtypes (:mod:`kiln.family.contract`, which also holds the one checker of a
  config entry against them: :meth:`FamilySpec.check_contract` calls it);
- ``options``: what a config entry of the spec may set (:class:`Option`): several entries build one
  spec at several sizes (``streaming_encoder_160ms: {spec: streaming_encoder, options: {chunk_ms:
  160}}``), each under its own name;
- ``wrapper(source, component, facts)``: the traceable ``nn.Module`` (built once, in the prepare job);
- ``example(component, facts, rng)``: tracing inputs (default: small noise / zeros from the contract);
- ``state``: :class:`StatePair` s, the outputs fed back as inputs on the next step, so one generic
  streaming driver (:func:`stream`) carries Silero's LSTM state, Parakeet's decoder state and EOU's
  encoder caches alike, on torch and on every Core ML backend;
- ``feeds(ctx, component)``: the validation inputs by modality (streamed speech, token ids + style
  + noise, mel frames), one dict of the non-state inputs per step (computed once, by the reference job);
- ``metrics``: task metrics (:class:`Metric`), ``plot``: a series over time (:class:`PlotSeries`);
  ``artifacts``: files the parity job writes beside the plots (e.g. WAVs + spectrograms, per-chunk
  error of every cache).

A :class:`FamilySpec` adds how to load the source (``load``), the facts later jobs need without the
source (``facts``: blank id, vocabulary, cache shapes; a missing value is an error, never a default),
random-initialised checkpoints (``build_random``) and the cross-component task (``task``).

Nothing here holds mutable module state: what a job computes lives in the job's :class:`Context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kiln.foundation.errors import ContractError, ModelError
from kiln.family.contract import Contract, check as check_shapes, names_problem, resolve

Arrays = Mapping[str, np.ndarray]
Predict = Callable[[Arrays], dict]

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


@dataclass(frozen=True)
class StatePair:
    """``output`` of one step becomes ``input`` of the next (e.g. ``new_hidden_state -> hidden_state``).
    The first step gets ``initial(component, facts)`` or zeros of the input's contract shape."""

    input: str
    output: str
    initial: Callable[[Any, Mapping[str, Any]], np.ndarray] | None = None


@dataclass(frozen=True)
class Metric:
    """A task metric: ``fn(reference_steps, candidate_steps, facts) -> dict`` (JSON-able).
    ``rank_by``: the key of that dict (a fraction, higher is better, e.g. decision agreement) by
    which the quantization summary ranks a component's variants; without one they rank by quality."""

    name: str
    fn: Callable[[list, list, Mapping[str, Any]], dict]
    rank_by: str | None = None


@dataclass(frozen=True)
class PlotSeries:
    """What a person wants to see over time: ``fn(steps) -> one value per step``."""

    label: str
    fn: Callable[[list], np.ndarray]


@dataclass(frozen=True)
class Feeds:
    """Validation inputs of one component: the non-state inputs of every step, and what they are."""

    steps: list[dict[str, np.ndarray]]
    description: str
    step_seconds: float | None = None   # audio time per step, for plots over time


@dataclass(frozen=True)
class Option:
    """An option a config entry of a component spec takes (config.yaml ``options.<name>``): one spec
    is built at several sizes by entries that differ in options (``streaming_encoder_160ms: {spec:
    streaming_encoder, options: {chunk_ms: 160}}``), never by parsing the entry's name.

    ``kind``: the Python type of the value (``float``: any number); ``minimum``: its least value. An option named in
    :data:`kiln.config.CONTRACT_SIZED_OPTIONS` (``chunk_ms``) only sizes the contract: the wrapper
    checks the contract's shapes against it."""

    name: str
    description: str
    kind: type = int
    minimum: int | None = 1
    required: bool = True

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this option, or None."""
        kinds = (int, float) if self.kind is float else self.kind   # a float option takes 5 as 5.0
        if not isinstance(value, kinds) or isinstance(value, bool):
            return f"must be {'a number' if self.kind is float else self.kind.__name__}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {self.minimum}, got {value!r}"
        return None


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wrapper: Callable[[Any, Any, Mapping[str, Any]], Any]
    feeds: Callable[["Context", Any], Feeds]
    state: tuple[StatePair, ...] = ()
    example: Callable[[Any, Mapping[str, Any], np.random.Generator], dict] | None = None
    metrics: tuple[Metric, ...] = ()
    plot: PlotSeries | None = None
    #: (out_dir, label, facts, reference_steps, {backend: steps}) -> written paths (parity job)
    artifacts: Callable[[Path, str, Mapping[str, Any], list, Mapping[str, list]], list] | None = None
    description: str = ""
    #: the options a config entry of this spec takes (:class:`Option`); None: not declared (the
    #: wrapper reads and checks what it needs)
    options: tuple[Option, ...] | None = None
    #: the symbolic contract (:mod:`kiln.family.contract`): shapes from facts and options, the one
    #: statement config.yaml's explicit shapes are checked against (None: the config block's shapes
    #: are the contract); give it with ``**declared(contract)``, which also sets inputs/outputs
    contract: Contract | None = None

    def __post_init__(self):
        if self.contract is not None and (self.contract.input_names, self.contract.output_names) != \
                (tuple(self.inputs), tuple(self.outputs)):
            raise ModelError(f"component spec {self.name}: inputs/outputs differ from its contract's names "
                             f"(give them once, with **declared(contract))")

    @property
    def state_inputs(self) -> tuple[str, ...]:
        return tuple(p.input for p in self.state)

    @property
    def feed_inputs(self) -> tuple[str, ...]:
        """Inputs that come from the validation feeds (everything that is not carried state)."""
        carried = set(self.state_inputs)
        return tuple(n for n in self.inputs if n not in carried)

    def example_inputs(self, component, facts: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.example is not None:
            return self.example(component, facts, rng)
        return default_example(component, rng)

    def initial_state(self, component, facts: Mapping[str, Any]) -> dict[str, np.ndarray]:
        specs = {t.name: t for t in component.inputs}
        out = {}
        for pair in self.state:
            spec = specs[pair.input]
            value = pair.initial(component, facts) if pair.initial else np.zeros(spec.shape)
            out[pair.input] = np.asarray(value, dtype=NUMPY_DTYPES[spec.dtype]).reshape(spec.shape)
        return out

    @property
    def rank_by(self) -> str | None:
        """The task metric key the component's quantized variants rank by (the first declared)."""
        return next((m.rank_by for m in self.metrics if m.rank_by), None)

    def task_metrics(self, reference: list, candidate: list, facts: Mapping[str, Any]) -> dict:
        result = {}
        for metric in self.metrics:
            result.update(check_hook_result(metric.fn(reference, candidate, facts), dict,
                                            f"component {self.name}: metric {metric.name!r}"))
        return result

    def validation_feeds(self, ctx: "Context", component) -> "Feeds":
        """The component's validation inputs (``feeds``), checked the moment they return: a
        :class:`Feeds` whose every step holds exactly the non-state inputs of the contract."""
        where = f"family {ctx.family.name}, component {self.name}: feeds(ctx, component)"
        feeds = self.feeds(ctx, component)
        if not isinstance(feeds, Feeds):
            raise ModelError(f"{where} returned {type(feeds).__name__}, not kiln.family.spec.Feeds")
        carried = set(self.state_inputs)
        expected = sorted(t.name for t in component.inputs if t.name not in carried)
        for i, step in enumerate(feeds.steps):
            if not isinstance(step, Mapping):
                raise ModelError(f"{where}: step {i} is {type(step).__name__}, not a dict of input arrays")
            if sorted(step) != expected:
                missing = sorted(set(expected) - set(step))
                unknown = sorted(set(step) - set(expected))
                raise ModelError(f"{where}: step {i} " + "; ".join(filter(None, [
                    f"misses input(s) {missing}" if missing else "", f"has unknown input(s) {unknown}" if unknown else ""]))
                    + f" (the contract's non-state inputs: {expected})")
        return feeds


class Deferred:
    """A family hook that lives in a part whose import is heavy (``build``/``checkpoint``: torch):
    ``attribute`` of module ``module``, imported on the first call, so a job that only judges
    (parity, summaries, contract, metadata) never imports torch to read its family's spec.

    Compares, hashes and pickles as its (module, attribute) pair; a missing module attribute is a
    :class:`ModelError` naming both (when first called or :meth:`resolve` d)."""

    __slots__ = ("module", "attribute", "_target")

    def __init__(self, module: str, attribute: str):
        self.module = module
        self.attribute = attribute
        self._target = None

    def resolve(self) -> Callable:
        if self._target is None:
            import importlib

            target = getattr(importlib.import_module(self.module), self.attribute, None)
            if not callable(target):
                what = "is missing" if target is None else f"is a {type(target).__name__}, not callable"
                raise ModelError(f"family hook {self.module}.{self.attribute} {what}")
            self._target = target
        return self._target

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __eq__(self, other) -> bool:
        return isinstance(other, Deferred) and (self.module, self.attribute) == (other.module, other.attribute)

    def __hash__(self) -> int:
        return hash((self.module, self.attribute))

    def __reduce__(self):
        return Deferred, (self.module, self.attribute)

    def __repr__(self) -> str:
        return f"Deferred({self.module}.{self.attribute})"


class DeferredPart:
    """A family part (a module, by its full dotted name) whose attributes are :class:`Deferred`
    hooks: ``build_part = DeferredPart("kiln.models.kokoro.build")`` then ``wrapper=build_part.wrapper``
    in the spec imports nothing until the wrapper is called. Give the name as one string literal: the
    workflow's code stamps read it as an import of that part (:mod:`kiln.workflow.codedeps`). Do not
    bind it to the submodule's own name in the package (``build = ...``): ``from package import
    build`` would then return it instead of the module.
    Constants (contracts, state pairs, rates) are not hooks: they live in torch-free modules."""

    __slots__ = ("module",)

    def __init__(self, module: str):
        self.module = module

    def __getattr__(self, attribute: str) -> Deferred:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Deferred(self.module, attribute)

    def __repr__(self) -> str:
        return f"DeferredPart({self.module})"


def declared(contract: Contract) -> dict:
    """``ComponentSpec(..., **declared(contract))``: the names, in order, and the symbolic contract,
    from one statement."""
    return {"inputs": contract.input_names, "outputs": contract.output_names, "contract": contract}


@dataclass(frozen=True)
class Task:
    """A check across components (e.g. greedy ASR decoding through every component).

    ``inputs(ctx)`` makes the task's inputs once (reference job); ``run(components, facts, inputs)``
    runs it on one backend given ``{component: predict}`` (must not need the source model);
    ``compare(reference_result, result)`` gives agreement figures.
    ``quantization(float_result, {strategy: result}, component)`` (optional) judges the task run
    with one component's quantized variants swapped in against the float run (the quantization
    summary job calls it, e.g. EOU timing per strategy and a recommendation). It returns
    ``{"strategies": {strategy: {...JSON figures...}}, "recommendation": "<one line>", ...}`` (more
    keys are kept); :func:`check_quantization_result` checks that the moment it returns, naming
    the missing or mistyped field, before the summary is written.
    """

    description: str
    requires: tuple[tuple[str, ...], ...]     # alternatives of component spec sets, e.g. ((a, b), (c,))
    inputs: Callable[["Context"], dict[str, np.ndarray]]
    run: Callable[[Mapping[str, Predict], Mapping[str, Any], Arrays], dict]
    compare: Callable[[dict, dict], dict]
    quantization: Callable[[dict, Mapping[str, dict], str], dict] | None = None
    #: (out_dir, title, reference_result, {backend: result}) -> written paths (end_to_end job)
    plot: Callable[[Path, str, dict, Mapping[str, dict]], list] | None = None

    def runnable_with(self, specs) -> bool:
        """Whether a model whose entries build ``specs`` (spec names) can run the task."""
        return any(set(option) <= set(specs) for option in self.requires)


def check_hook_result(result: Any, kind: type, where: str, *, json_fields: bool = False) -> Any:
    """``result`` of a family hook (``where`` names the family, the component and the hook), checked
    the moment the hook returns: of type ``kind``; with ``json_fields``, a dict whose every field is
    JSON-able (what the job records). Raises :class:`ModelError` naming the hook and the field."""
    if not isinstance(result, kind):
        raise ModelError(f"{where} returned {type(result).__name__}, expected {kind.__name__}")
    if json_fields and isinstance(result, Mapping):
        import json

        for name, value in result.items():
            if not isinstance(name, str):
                raise ModelError(f"{where}: field {name!r} is named by a {type(name).__name__}, not a string")
            try:
                json.dumps(value, allow_nan=True)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{where}: field '{name}' is not JSON-able ({exc})") from None
    return result


#: the fields ``Task.quantization`` must return: name -> (type, what it holds)
QUANTIZATION_RESULT_FIELDS = {
    "strategies": (dict, "strategy -> that strategy's task figures (a dict)"),
    "recommendation": (str, "one line: which strategy to ship for this component, and why"),
}


def check_quantization_result(result: Any, family: str, component: str) -> dict:
    """``result`` of a family's ``Task.quantization`` hook for ``component``, after checking its shape
    (:data:`QUANTIZATION_RESULT_FIELDS`); raises :class:`ModelError` naming the field."""
    where = f"family {family}: task.quantization(..., component={component!r})"
    if not isinstance(result, Mapping):
        raise ModelError(f"{where} returned {type(result).__name__}, not a dict with "
                         f"{', '.join(QUANTIZATION_RESULT_FIELDS)}")
    for name, (kind, what) in QUANTIZATION_RESULT_FIELDS.items():
        if name not in result:
            raise ModelError(f"{where} returned no '{name}' ({what}); it returned keys {sorted(result)}")
        if not isinstance(result[name], kind):
            raise ModelError(f"{where}: '{name}' is {type(result[name]).__name__}, expected {kind.__name__} ({what})")
    for strategy, figures in result["strategies"].items():
        if not isinstance(figures, Mapping):
            raise ModelError(f"{where}: 'strategies.{strategy}' is {type(figures).__name__}, expected a dict "
                             f"of that strategy's task figures")
    return dict(result)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    load: Callable[[Any], Any]                          # SourceRecord -> source (prepare job only)
    facts: Callable[[Any], dict]                        # source -> JSON-able facts
    components: tuple[ComponentSpec, ...]
    build_random: Callable[..., Path] | None = None     # (architecture, *, seed, overrides, out_dir)
    task: Task | None = None
    #: (source, {component: traced predict}, facts, {component: ComponentConfig}) -> JSON-able checks
    #: of the wrappers against the original source, recorded by the prepare job (e.g. equal to
    #: NeMo's own cache-aware streaming step)
    faithfulness: Callable[[Any, Mapping[str, Predict], Mapping[str, Any], Mapping[str, Any]], dict] | None = None
    sample_rate: int = 16_000
    #: (facts, ComponentConfig) -> a validation Backend running the original source in its own
    #: runtime (onnxruntime for an ONNX graph): the parity job compares it with torch and every
    #: Core ML backend with it, so a converter's error cannot hide in both torch and Core ML
    source_runtime: Callable[[Mapping[str, Any], Any], Any] | None = None

    @property
    def component_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)

    def component(self, name: str) -> ComponentSpec:
        for spec in self.components:
            if spec.name == name:
                return spec
        raise ModelError(f"model family '{self.name}' has no component '{name}' "
                         f"(it builds: {', '.join(self.component_names)})")

    def spec_of(self, component):
        """The :class:`ComponentSpec` a config entry (ComponentConfig) instantiates: its ``spec``
        (the entry's own name unless config.yaml names another)."""
        return self.component(component.spec)

    def spec_problem(self, component) -> tuple[str, str] | None:
        """(key, what is wrong) when ``component`` names no spec of this family or its options do
        not fit the spec's declared :class:`Option` s, else None."""
        where = f"models.{component.model}.components.{component.name}"
        if component.spec not in self.component_names:
            key = where if component.spec == component.name else f"{where}.spec"
            return key, (f"the {self.name} family builds no component '{component.spec}' (it builds: "
                         f"{', '.join(self.component_names)}; an entry of another name says which with spec:)")
        spec = self.component(component.spec)
        if spec.options is None:
            return None
        declared = {o.name: o for o in spec.options}
        for name in component.options:
            if name not in declared:
                return f"{where}.options.{name}", (f"the {self.name} family's {spec.name} takes no option "
                                                   f"'{name}' (it takes: {', '.join(declared) or 'none'})")
        for option in spec.options:
            if option.name not in component.options:
                if option.required:
                    return f"{where}.options", (f"the {self.name} family's {spec.name} needs option "
                                                f"'{option.name}' ({option.description})")
                continue
            problem = option.problem(component.options[option.name])
            if problem:
                return f"{where}.options.{option.name}", problem
        return None

    def contract_problem(self, component) -> tuple[str, str] | None:
        """(key, what is wrong) when ``component``'s contract names differ from the spec's, else None."""
        problem = self.spec_problem(component)
        if problem:
            return problem
        spec = self.spec_of(component)
        return names_problem(component, spec.inputs, spec.outputs, f"the {self.name} family's {spec.name}")

    def resolved_contract(self, component, facts: Mapping[str, Any]) -> dict | None:
        """``component``'s contract resolved from ``facts`` and its options (the spec's symbolic
        :class:`~kiln.family.contract.Contract`), or None when the spec declares none."""
        spec = self.spec_of(component)
        if spec.contract is None:
            return None
        return resolve(spec.contract, facts, component.options,
                       f"family {self.name}, {component.model}/{component.name} ({spec.name})")

    def check_contract(self, component, facts: Mapping[str, Any] | None = None) -> ComponentSpec:
        """The spec of ``component`` (a ComponentConfig), after checking its contract's names
        against what the spec declares and, given the ``facts``, its shapes and dtypes against the
        spec's resolved symbolic contract (the one checker of a family's shapes). Raises
        :class:`ContractError` naming the difference (model, component, tensor, axis)."""
        problem = self.contract_problem(component)
        if problem:
            raise ContractError(f"{problem[0]}: {problem[1]}")
        if facts is not None:
            resolved = self.resolved_contract(component, facts)
            if resolved is not None:
                check_shapes(component, resolved, self.name)
        return self.spec_of(component)

    def build_component(self, source: Any, component, facts: Mapping[str, Any] | None = None):
        """The traceable wrapper of ``component`` (a ComponentConfig) from a loaded source."""
        facts = self.facts(source) if facts is None else facts
        spec = self.check_contract(component, facts)
        return spec.wrapper(source, component, facts).eval()

    def make_random(self, architecture: str, *, seed: int, overrides: Mapping[str, Any], out_dir: Path) -> Path:
        if self.build_random is None:
            raise ModelError(f"model family '{self.name}' has no random-initialised architectures")
        return self.build_random(architecture, seed=seed, overrides=overrides, out_dir=out_dir)


def default_example(component, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs matching the contract, for tracing (values matter only for data-dependent code)."""
    out = {}
    for spec in component.inputs:
        if spec.dtype == "int32":
            out[spec.name] = rng.integers(0, 2, size=spec.shape).astype(np.int32)
        else:
            out[spec.name] = (0.1 * rng.standard_normal(spec.shape)).astype(NUMPY_DTYPES[spec.dtype])
    return out


def require_fact(facts: Mapping[str, Any], key: str, family: str) -> Any:
    try:
        return facts[key]
    except KeyError:
        raise ModelError(f"{family}: the prepared facts have no '{key}' (re-run the prepare job; "
                         f"known: {sorted(facts)})") from None


# -- the one streaming driver ---------------------------------------------------------------------

def stream(predict: Predict, spec: ComponentSpec, feeds: Sequence[Arrays],
           initial: Arrays, component=None) -> list[dict[str, np.ndarray]]:
    """Run ``predict`` (any backend) over ``feeds`` as an app would: each step gets the step's feeds
    plus the state inputs, first ``initial``, then the backend's *own* previous outputs."""
    shapes = {t.name: (t.shape, NUMPY_DTYPES[t.dtype]) for t in component.inputs} if component else {}
    state = {k: np.asarray(v) for k, v in initial.items()}
    missing = [p.input for p in spec.state if p.input not in state]
    if missing:
        raise ContractError(f"{spec.name}: no initial value for state input(s) {missing}")
    outputs = []
    for step, feed in enumerate(feeds):
        inputs = {**feed, **state}
        out = predict(inputs)
        outputs.append(out)
        for pair in spec.state:
            if pair.output not in out:
                raise ContractError(f"{spec.name}: step {step} produced no '{pair.output}' (state pair "
                                    f"{pair.output} -> {pair.input}); outputs: {sorted(out)}")
            value = np.asarray(out[pair.output])
            if pair.input in shapes:
                shape, dtype = shapes[pair.input]
                value = value.astype(dtype).reshape(shape)
            state[pair.input] = value
    return outputs


# -- what a reference job offers the feeds functions ----------------------------------------------

@dataclass
class Context:
    """Per-job context of the reference stage: the facts, the traced torch programs of every
    component of the model, and a memo so shared work (e.g. one greedy decode) is done once."""

    family: FamilySpec
    model: Any                              # ModelConfig
    facts: Mapping[str, Any]
    predictors: Mapping[str, Predict]
    _memo: dict = field(default_factory=dict)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    def has(self, component: str) -> bool:
        return component in self.predictors

    def torch(self, component: str) -> Predict:
        try:
            return self.predictors[component]
        except KeyError:
            raise ModelError(f"{self.model.name}: validating needs the torch program of component "
                             f"'{component}', which config.yaml does not list "
                             f"(configured: {', '.join(self.predictors)})") from None

    def contract(self, component: str):
        return self.model.components[component]

    def stream(self, component: str, feeds: Sequence[Arrays]) -> list[dict]:
        comp = self.contract(component)
        spec = self.family.spec_of(comp)
        return stream(self.torch(component), spec, feeds, spec.initial_state(comp, self.facts), comp)

    def speech(self, seconds: float, rate: int | None = None, seed: int = 0) -> np.ndarray:
        from kiln.audio import speech_mix

        return speech_mix(seconds, rate=rate or self.family.sample_rate, seed=seed)


def check_outputs(component, outputs) -> None:
    """Raise :class:`ContractError` when a wrapper's outputs do not match the configured contract."""
    expected = component.outputs
    if len(outputs) != len(expected):
        raise ContractError(f"{component.model}/{component.name}: wrapper returned {len(outputs)} "
                            f"outputs, the contract declares {len(expected)}: "
                            f"{', '.join(t.name for t in expected)}")
    for spec, value in zip(expected, outputs):
        if tuple(value.shape) != spec.shape:
            raise ContractError(f"{component.model}/{component.name}: output '{spec.name}' has shape "
                                f"{list(value.shape)}, the contract declares {list(spec.shape)}")


def check_inputs(specs, values: Mapping[str, np.ndarray], where: str) -> None:
    expected = {s.name: s for s in specs}
    if set(values) != set(expected):
        raise ContractError(f"{where}: inputs {sorted(values)} do not match the contract "
                            f"{[f'{s.name} {list(s.shape)} {s.dtype}' for s in specs]}")
    for name, spec in expected.items():
        arr = np.asarray(values[name])
        if tuple(arr.shape) != spec.shape:
            raise ContractError(f"{where}: input '{name}' has shape {list(arr.shape)}, expected "
                                f"{list(spec.shape)}")
