"""Family ``plain``, the judging part: onnxruntime on the original file (a third parity backend),
the probability plot, and the user's own metrics (the stock ones come from the outputs' ``kind``)."""

from __future__ import annotations

import numpy as np

from kiln.foundation.errors import ModelError
from kiln.family.spec import PlotSeries
from kiln.models.plain.hooks import user_callable


def source_runtime(facts, component):
    """onnxruntime on the original .onnx file (checked against its fetched sha256), its outputs
    named and shaped as the contract's."""
    from kiln.sources import SourceFile, onnx_graph, verify_file
    from kiln.validate.backends import Backend

    info = facts["onnxruntime"]
    path = verify_file(SourceFile(role="checkpoint", path=info["path"], sha256=info["sha256"], size=0))
    session = onnx_graph.session(path)
    dtypes = {i.name: i.type for i in session.get_inputs()}
    fixed = {k: np.asarray(v, dtype=np.int64 if "int64" in dtypes.get(k, "") else np.float32)
             for k, v in info["constants"].items()}

    graph_inputs = [i.name for i in session.get_inputs() if i.name not in fixed]

    def predict(inputs):
        feed = {g: np.asarray(inputs[t.name]) for g, t in zip(graph_inputs, component.inputs)}
        got = session.run(None, {**feed, **fixed})
        return {t.name: np.asarray(v).reshape(t.shape) for t, v in zip(component.outputs, got)}

    return Backend("onnxruntime", "source", None, predict)


def probability_plot(component) -> PlotSeries | None:
    """The first probability output over time (the mean of its elements per step)."""
    name = next((t.name for t in component.outputs if t.kind == "probability"), None)
    if name is None:
        return None
    return PlotSeries(f"{name} (probability)", lambda steps: np.array([float(np.mean(s[name])) for s in steps]))


def user_metric(function: str, where: str):
    """A metric of the user's own, ``function(reference_steps, candidate_steps, facts) -> dict``,
    imported when first computed (the spec is built by every job; only the judging jobs run it)."""
    def metric(reference_steps, candidate_steps, facts):
        fn = user_callable(function, f"{where}.function")
        try:
            return fn(reference_steps, candidate_steps, facts)
        except Exception as exc:  # the user's code: any failure is named with the function
            raise ModelError(f"{where}.function: {function} raised {type(exc).__name__}: {exc}") from exc
    metric.__qualname__ = metric.__name__ = function.rpartition(":")[2]
    return metric
