"""Family ``plain``: a model from a config block alone, no Python.

Most models a user brings are one network with weights and a fixed contract. The model's
``network`` block says what the fetched file is; its components' inputs and outputs (shapes,
dtypes, output ``kind``), ``state`` pairs and ``feeds`` say the rest::

    network: {kind: torchscript, submodule: _model}      # a TorchScript archive (scripted or traced)
    network: {kind: module, factory: "pkg.mod:make", kwargs: {dim: 64}, weights_kwarg: path}
    network: {kind: module, factory: "pkg.mod:Net", state_dict: true}   # torch.load -> load_state_dict
    network: {kind: onnx}                                 # the static graph of an ``onnx`` source

- the network is called with the contract's inputs in config order and returns its outputs in
  config order (a tensor, a tuple/list, or a dict keyed by the output names);
- ``torchscript``: a scripted archive keeps Python control flow (``if``, loops, ``len`` of a
  tensor) that Core ML cannot take; it is specialised to the contract's fixed shapes by running it
  once under ``make_fx`` (every branch decided by the example inputs, as ``torch.jit.trace`` decides a
  Python branch; data-dependent control flow is therefore fixed to the example's path);
- ``onnx``: the graph's free inputs (after ``source.inputs`` binds constants) are the contract's
  inputs by position (and its outputs the contract's outputs); parity is then three-way (onnxruntime runs the original file);
- ``state: {hidden_in: hidden_out}``: the output fed back to the input on the next step (zeros first),
  carried by the generic streaming driver on torch and every Core ML backend;
- ``feeds: {input: {modality: speech | log_mel | random | token_ids | npz | function, ...}}``:
  validation inputs (default: uniform in [-1, 1], 8 steps); ``log_mel`` computes frames of speech
  with a named frontend (:data:`feeds.FRONTENDS`); ``function`` calls your own
  ``"pkg.mod:make"(shape=[...], dtype=..., **kwargs)`` for one array per step;
- ``metrics: [{name, function: "pkg.mod:fn", rank_by}]``: task metrics of your own,
  ``fn(reference_steps, candidate_steps, facts) -> dict``, beside those of the outputs' kinds.

Judgement comes from the outputs' ``kind`` (:mod:`kiln.validate.kinds`), recorded by the parity and
quantize jobs for any family. The spec is built per model by :func:`family_for`.
"""

from __future__ import annotations

from functools import partial

from kiln.foundation.errors import ModelError
from kiln.family.spec import ComponentSpec, FamilySpec, Metric, StatePair
from kiln.models.plain import build, feeds, judge
from kiln.models.plain.build import NAME


def _component(component) -> ComponentSpec:
    return ComponentSpec(
        component.name, inputs=tuple(t.name for t in component.inputs),
        outputs=tuple(t.name for t in component.outputs), wrapper=build.wrapper, feeds=feeds.feeds,
        state=tuple(StatePair(i, o) for i, o in component.state.items()),
        metrics=tuple(Metric(m["name"], judge.user_metric(m["function"], f"models.{component.model}.components."
                                                          f"{component.name}.metrics.{m['name']}"),
                             rank_by=m.get("rank_by"))
                      for m in component.metrics),
        plot=judge.probability_plot(component), description=component.description)


def family_for(model) -> FamilySpec:
    """The spec of ``model`` (a ModelConfig of family ``plain``), from its config block."""
    if model.network is None:
        raise ModelError(f"models.{model.name}: family plain needs a network block")
    return FamilySpec(name=NAME, load=partial(build.load, model), facts=build.facts,
                      components=tuple(_component(c) for c in model.components.values()),
                      source_runtime=judge.source_runtime if model.network["kind"] == "onnx" else None)
