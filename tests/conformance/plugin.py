"""pytest plugin: coremltools' MIL op test suite with kiln's executor as the Core ML backend.

Load it with ``-p tests.conformance.plugin`` and run the suite shipped in the coremltools wheel::

    PYMIL_TEST_TARGETS=mlprogram INCLUDE_MIL_FP32_UNIT_TESTS=1 \\
        python -m pytest -p tests.conformance.plugin -n 2 \\
        --pyargs coremltools.converters.mil.mil.ops.tests --kiln-summary tests/conformance/results/summary.json

Off macOS the suite's ``compare_backend`` returns without checking anything. This plugin replaces it
with the suite's own macOS branch (same shape check, same tolerance rule, same fp16 widening) run
against kiln (:mod:`tests.conformance.kiln_backend`), and gives ``MLModel.predict`` /
``MLModel.make_state`` a runtime, so the suite's direct predictions run on kiln too. The suite's fp16
backend runs kiln's fp16 emulation, its fp32 backend kiln's fp32 reference.

Every case's outcome (passed, failed, skipped/xfailed with the reason) and what it executed on kiln
(opset, op types, precision) is collected on the controller and written to the summary JSON.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import time
import zlib
from collections import Counter, defaultdict

import numpy as np
import pytest

# The suite reads these when testing_reqs is first imported: ML Programs only, both precisions.
os.environ.setdefault("PYMIL_TEST_TARGETS", "mlprogram")
os.environ.setdefault("INCLUDE_MIL_FP32_UNIT_TESTS", "1")

from kiln.mil.coverage import APPLE_DISAGREEMENT, apple_disagreement_for  # noqa: E402

from . import errata, kiln_backend  # noqa: E402
from .kiln_backend import CURRENT_CASE, CaseRecord  # noqa: E402

SUITE_PACKAGE = "coremltools.converters.mil.mil.ops.tests"
# kiln stands in for the runtime of the newest macOS the suite knows (15.2, paired with iOS18): the
# suite's gates on the host's macOS version ("Bug fixed in macOS 14") are about Apple's runtime.
STAND_IN_MACOS = (15, 2)
# ... on Apple silicon: the suite xfails stateful programs on Intel Macs ("rdar://149313013", a
# defect of Apple's x86_64 runtime); kiln runs them.
STAND_IN_MACHINE = "arm64"
# Op types that every converted program carries around the op under test.
PLUMBING_OPS = frozenset({"const", "cast"})


def pytest_addoption(parser):
    group = parser.getgroup("kiln conformance")
    group.addoption("--kiln-summary", default=None, help="write the conformance summary JSON here")
    group.addoption(
        "--kiln-slice", default=None,
        help="run only the cases listed in this file (one case id a line, as in the summary)",
    )
    group.addoption("--kiln-list", default=None, help="write the selected case ids to this file")
    group.addoption(
        "--kiln-keep-radar-stops", action="store_true",
        help="let a test body's pytest.skip / pytest.xfail citing an Apple radar (rdar://) stop the case, "
             "as on Apple's runtime (by default the case goes on and runs on kiln: those radars are "
             "defects of Apple's runtime; a case that then fails before reaching a runtime gets the "
             "suite's own outcome back)",
    )
    group.addoption(
        "--kiln-candidates", action="store_true",
        help="run the first case of every test function per backend opset (fast-slice candidates)",
    )


def _candidate_keys(item) -> set[tuple]:
    """Fast-slice candidates: the first case of every test function per backend opset, and of every
    value of its string parameters (the suite selects the op under test by a string parameter, e.g.
    ``mode="sin"``)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    function = case_id(item).split("[")[0]
    opset = str(getattr(params.get("backend"), "opset_version", None))
    keys = {(function, opset)}
    keys.update((function, opset, name, value) for name, value in params.items() if isinstance(value, str))
    return keys


def _cites_radar(reason: str) -> bool:
    """Whether a skip/xfail reason cites an Apple radar (a defect of Apple's runtime)."""
    return "rdar://" in reason


def _mark_reason(mark) -> str:
    return str(mark.kwargs.get("reason", mark.args[0] if mark.args else ""))


def _is_radar_xfail(mark) -> bool:
    return mark.name == "xfail" and _cites_radar(_mark_reason(mark))


def _pass_over_radar_xfail_marks(items) -> None:
    """Take the ``@pytest.mark.xfail(reason="rdar://...")`` marks (Apple-runtime defects, passed over
    like the test bodies' radar stops) off every case, and off the classes and modules holding them,
    noting on each case the reasons it passes over."""
    nodes = {}
    for item in items:
        item._kiln_radar_marks = []
        for node in item.listchain():
            nodes[id(node)] = node
            item._kiln_radar_marks += [_mark_reason(mark) for mark in node.own_markers if _is_radar_xfail(mark)]
    for node in nodes.values():
        node.own_markers[:] = [mark for mark in node.own_markers if not _is_radar_xfail(mark)]


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--kiln-keep-radar-stops"):
        _pass_over_radar_xfail_marks(items)
    if config.getoption("--kiln-candidates"):
        seen, kept = set(), []
        for item in items:
            keys = _candidate_keys(item)
            if not keys <= seen:
                seen |= keys
                kept.append(item)
        kept_ids = {id(item) for item in kept}
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in kept_ids])
        items[:] = kept
    listing = config.getoption("--kiln-list")
    if listing:
        with open(listing, "w", encoding="utf-8") as handle:
            handle.writelines(f"{case_id(item)}\n" for item in items)
    path = config.getoption("--kiln-slice")
    if not path:
        return
    with open(path, encoding="utf-8") as handle:
        wanted = {line.strip() for line in handle if line.strip() and not line.startswith("#")}
    selected = [item for item in items if case_id(item) in wanted]
    missing = wanted - {case_id(item) for item in selected}
    if missing:
        raise pytest.UsageError(f"{path}: {len(missing)} cases not in the suite, e.g. {sorted(missing)[0]}")
    config.hook.pytest_deselected(items=[item for item in items if case_id(item) not in wanted])
    items[:] = selected


def _suite_compare_backend(
    mlmodel,
    input_key_values,
    expected_outputs,
    dtype="fp32",
    atol=1e-04,
    rtol=1e-05,
    also_compare_shapes=True,
    state=None,
    allow_mismatch_ratio=0.0,
):
    """The suite's ``compare_backend`` (coremltools 9.0 testing_utils.py), macOS branch, with kiln
    producing the prediction. The tolerance rule is the suite's, unchanged."""
    import coremltools as ct
    from coremltools.converters.mil import testing_utils as tu

    if dtype not in ["fp32", "fp16"]:
        raise ValueError("Unsupported dtype config")
    case = CURRENT_CASE.get()
    if case is not None:
        case.precision = dtype
    pred = tu.run_core_ml_predict(mlmodel, input_key_values, state)
    if also_compare_shapes:
        _compare_shapes(mlmodel, expected_outputs, pred)
    if mlmodel.compute_unit != ct.ComputeUnit.CPU_ONLY or (dtype == "fp16"):
        atol = max(atol * 100.0, 5e-1)
        rtol = max(rtol * 100.0, 5e-2)
    try:
        _compare_values(pred, expected_outputs, atol, rtol, allow_mismatch_ratio)
    except AssertionError as mismatch:
        _judge_mismatch(case, mismatch, pred, expected_outputs, atol, rtol, allow_mismatch_ratio)
    else:
        erratum = errata.erratum_for(case.case_id) if case is not None else None
        if erratum is not None:
            pytest.fail(f"kiln now matches the suite; remove the erratum {erratum.pattern!r}")
        disagreement = apple_disagreement_for(case.case_id) if case is not None else None
        if disagreement is not None:
            pytest.fail(f"kiln now matches Apple's runtime; remove the known disagreement {disagreement.case!r} "
                        f"(kiln.mil.coverage.APPLE_DISAGREEMENTS)")
    return pred


def _compare_values(pred, expected_outputs, atol, rtol, allow_mismatch_ratio):
    """The suite's value comparison (coremltools 9.0 ``compare_backend``), unchanged."""
    from coremltools.converters.mil import testing_utils as tu

    for o, expected in expected_outputs.items():
        coreml_out = tu._get_coreml_out_from_dict(pred, o)
        if isinstance(coreml_out, np.ndarray):
            try:
                np.testing.assert_allclose(coreml_out, expected, atol=atol, rtol=rtol)
            except AssertionError:
                mismatch_num = np.sum(~np.isclose(coreml_out, expected, atol=atol, rtol=rtol))
                total_num = np.prod(expected.shape)
                if mismatch_num / total_num > allow_mismatch_ratio:
                    raise
        elif isinstance(coreml_out, dict):
            for k, v in coreml_out.items():
                assert k in expected
                assert expected[k] == v
        else:
            assert coreml_out == expected


def _judge_mismatch(case, mismatch, pred, expected_outputs, atol, rtol, allow_mismatch_ratio):
    """A failed comparison is a failure unless an erratum (errata.py) names the suite as wrong."""
    if case is None:
        raise mismatch
    # kiln's own shortfall against Apple's runtime (the suite's expectation is right): xfailed with
    # that reason, and counted apart from the suite's errata in the summary
    disagreement = apple_disagreement_for(case.case_id)
    if disagreement is not None:
        _XFAIL(disagreement.reason)
    erratum = errata.erratum_for(case.case_id)
    if erratum is not None:
        _XFAIL(erratum.reason)
    ran_fp16 = any(run["precision"] == "fp16" for run in case.runs)
    if ran_fp16:
        # (the fp32 backend's tolerance widened as the suite widens it for fp16 computations)
        wide = (atol, rtol) if case.precision == "fp16" else (max(atol * 100.0, 5e-1), max(rtol * 100.0, 5e-2))
        if errata.beyond_fp16_range_only(pred, expected_outputs, *wide):
            _XFAIL(errata.FP16_BEYOND_RANGE)
    if case.precision == "fp32" and ran_fp16:
        # the suite's own widening for fp16 computations (compare_backend, dtype == "fp16")
        try:
            _compare_values(pred, expected_outputs, max(atol * 100.0, 5e-1), max(rtol * 100.0, 5e-2),
                            allow_mismatch_ratio)
        except AssertionError:
            raise mismatch from None
        _XFAIL(errata.FP16_TYPED_UNDER_FP32)
    raise mismatch


def _compare_shapes(mlmodel, expected_outputs, pred):
    """The suite's ``compare_shapes`` (macOS branch) on kiln's prediction."""
    from coremltools.converters.mil import testing_utils as tu

    for o, expected in expected_outputs.items():
        coreml_out = tu._get_coreml_out_from_dict(pred, o)
        if isinstance(coreml_out, dict) and isinstance(expected, dict):
            assert len(coreml_out) == len(expected)
            continue
        np_types = (np.generic, np.ndarray)
        if isinstance(coreml_out, np_types) and isinstance(expected, np_types):
            msg = f"Output: {o}. expected shape {expected.shape} != actual shape {coreml_out.shape}"
            if expected.shape == () and coreml_out.shape == (1,):
                continue
            assert coreml_out.shape == expected.shape, msg


def _predict(self, data, state=None):
    """``MLModel.predict`` for a model without a Core ML runtime: run it on kiln."""
    if self.__proxy__:
        return _ORIGINAL_PREDICT(self, data, state)
    if self._spec.WhichOneof("Type") != "mlProgram":
        pytest.skip("neuralnetwork model: kiln's executor runs ML Programs only")
    return kiln_backend.predict(self, data, state)


def _make_state(self):
    if self.__proxy__:
        return _ORIGINAL_MAKE_STATE(self)
    return kiln_backend.KilnState(kiln_backend.loaded_model(self))


_ORIGINAL_PREDICT = None
_ORIGINAL_MAKE_STATE = None


def _install():
    """Point the suite at kiln: compare_backend everywhere it was imported, predict, make_state."""
    global _ORIGINAL_PREDICT, _ORIGINAL_MAKE_STATE
    import coremltools as ct
    from coremltools.converters.mil import testing_utils as tu
    from coremltools.models import utils as model_utils

    model_utils._macos_version = lambda: STAND_IN_MACOS
    original = tu.compare_backend
    tu.compare_backend = _suite_compare_backend
    import importlib

    suite_utils = importlib.import_module(f"{SUITE_PACKAGE}.testing_utils")
    suite_utils.compare_backend = _suite_compare_backend
    if _ORIGINAL_PREDICT is None:
        _ORIGINAL_PREDICT = ct.models.MLModel.predict
        _ORIGINAL_MAKE_STATE = ct.models.MLModel.make_state
        ct.models.MLModel.predict = _predict
        ct.models.MLModel.make_state = _make_state
    return original


_ORIGINAL_COMPARE = _install()


def _rebind_compare_backend():
    """Test modules that imported ``compare_backend`` by name hold the original: rebind them."""
    import sys

    for module in list(sys.modules.values()):
        if getattr(module, "compare_backend", None) is _ORIGINAL_COMPARE:
            module.compare_backend = _suite_compare_backend


def pytest_collection_finish(session):
    _rebind_compare_backend()
    # ct.convert ends with a full gc.collect(); over the imported frameworks and ~20,000 collected
    # items that took ~0.75 s of a case's ~0.95 s. Frozen, they are left out of every collection
    # (what the cases create is still collected).
    gc.collect()
    gc.freeze()


def _case_precision(item) -> str:
    """The precision of the suite backend a case is parametrised with (fp32 when it has none)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    backend = params.get("backend")
    precision = getattr(backend, "precision", None)
    if precision is None and isinstance(backend, tuple) and len(backend) == 2:
        precision = backend[1]
    return precision if precision in ("fp16", "fp32") else "fp32"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    case = CaseRecord(precision=_case_precision(item), case_id=case_id(item))
    # the suite draws unseeded random inputs: seed them per case so a run is reproducible
    seed = zlib.crc32(case.case_id.encode())
    np.random.seed(seed)
    random.seed(seed)
    item._kiln_case = case
    token = CURRENT_CASE.set(case)
    machine = platform.machine
    platform.machine = lambda: STAND_IN_MACHINE
    if not item.config.getoption("--kiln-keep-radar-stops"):
        case.radar_stops.extend(["xfail", reason] for reason in getattr(item, "_kiln_radar_marks", ()))
        pytest.xfail = _radar_noted(case, "xfail", _XFAIL)
        pytest.skip = _radar_noted(case, "skip", _SKIP)
    try:
        yield
    finally:
        pytest.xfail = _XFAIL
        pytest.skip = _SKIP
        platform.machine = machine
        CURRENT_CASE.reset(token)


_XFAIL = pytest.xfail  # the plugin's own xfails (errata) always stop the case
_SKIP = pytest.skip


def _radar_noted(case: CaseRecord, kind: str, stop):
    """``pytest.xfail`` / ``pytest.skip`` for a test body: a reason citing an Apple radar (a defect
    of Apple's runtime, which kiln stands in for) is noted on the case and the test goes on; any
    other reason stops it as usual."""

    def noted(reason: str = "", **kwargs) -> None:
        if not _cites_radar(reason):
            stop(reason, **kwargs)
        case.radar_stops.append([kind, reason])

    return noted


def _restore_radar_stop(report, case: CaseRecord) -> None:
    """A case whose radar stop was passed over and which then failed before reaching a runtime (the
    builder or converter refused the program: e.g. prelu's rank-3/5 alpha check) built no ML Program
    for kiln to run; it gets the outcome the suite gave it, with the suite's reason."""
    if not (report.failed and case.radar_stops and not case.reached_runtime):
        return
    kind, reason = case.radar_stops[-1]
    report.outcome = "skipped"
    if kind == "xfail":
        report.wasxfail = reason
        report.longrepr = None
    else:
        report.longrepr = (str(report.location[0]), report.location[1] or 0, f"Skipped: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.user_properties.append(("kiln_case_id", case_id(item)))
    case = getattr(item, "_kiln_case", None)
    if call.when == "call" and case is not None:
        report.user_properties.append(("kiln_runs", case.runs))
        if case.radar_stops:
            report.user_properties.append(("kiln_radar_stops", case.radar_stops))
        report.user_properties.append(("kiln_precision", case.precision))
        _restore_radar_stop(report, case)
        _apply_after_compare_erratum(report, call, case)
    if call.when == "setup":
        report.user_properties.append(("kiln_precision", _case_precision(item)))


def case_id(item) -> str:
    """``iOS14/test_activation.py::TestReLU::test_x[...]``: the case's node id from the suite's
    folder (pytest's node id of a module collected with --pyargs outside the rootdir drops it)."""
    module = item.module.__name__ if getattr(item, "module", None) is not None else ""
    path = module.removeprefix(SUITE_PACKAGE + ".").replace(".", "/") + ".py"
    # some parameter ids are numpy reprs spanning lines: one line per case id
    return " ".join((path + "::" + item.nodeid.split("::", 1)[-1]).split())


def _apply_after_compare_erratum(report, call, case):
    """A listed check the test makes after kiln's outputs matched (errata.py, ``after_compare``):
    its assertion failure is an xfail with the reason; the case passing fails, so the list stays true."""
    erratum = errata.erratum_for(case.case_id, after_compare=True)
    if erratum is None or hasattr(report, "wasxfail"):
        return
    if report.passed:
        report.outcome = "failed"
        report.longrepr = f"kiln and the suite now agree; remove the erratum {erratum.pattern!r}"
    elif report.failed and call.excinfo is not None and call.excinfo.errisinstance(AssertionError) \
            and erratum.after_compare in str(call.excinfo.value):
        report.outcome = "skipped"
        report.wasxfail = erratum.reason
        report.longrepr = None


# -- controller side: collect every case's outcome into the summary --------------------------------
class _Collector:
    """Every case's outcome; with a progress path, each finished case is also appended there as a
    JSON line at once, so a long run's failures can be read (and a stopped run's kept) before the
    summary is written."""

    def __init__(self, progress_path: str | None = None):
        self.cases: dict[str, dict] = {}
        self.progress = open(progress_path, "w", encoding="utf-8", buffering=1) if progress_path else None

    def record(self, report):
        props = dict(report.user_properties)
        key = props.get("kiln_case_id", report.nodeid)
        entry = self.cases.setdefault(key, {"outcome": None})
        if "kiln_precision" in props:
            entry["precision"] = props["kiln_precision"]
        if "kiln_runs" in props and props["kiln_runs"]:
            runs = props["kiln_runs"]
            entry["executed"] = True
            entry["opset"] = runs[0]["opset"]
            entry["ops"] = sorted({op for run in runs for op in run["ops"]})
        if props.get("kiln_radar_stops"):
            # the suite's radar skips/xfails this case went past ([kind, reason] each)
            entry["radar_stops_passed"] = props["kiln_radar_stops"]
        entry["duration"] = round(entry.get("duration", 0.0) + report.duration, 4)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            entry["outcome"], reason = _outcome(report)
            if reason:
                entry["reason"] = reason
        elif report.when == "teardown" and report.failed and entry["outcome"] != "failed":
            entry["outcome"], entry["reason"] = "failed", _first_line(report)
        if report.when == "teardown" and self.progress is not None:
            self.progress.write(json.dumps({"case": key, **entry}) + "\n")


def _first_line(report) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _outcome(report) -> tuple[str, str]:
    if hasattr(report, "wasxfail"):
        return ("xfailed" if report.skipped else "xpassed"), report.wasxfail or "xfail"
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.failed:
        return "failed", _first_line(report)
    return "passed", ""


def summarize(cases: dict[str, dict]) -> dict:
    """Totals per precision, failures per op type and per test, skips and xfails by reason (xfails
    also by op), and what became of the cases whose radar stops were passed over."""
    per_precision: dict[str, Counter] = defaultdict(Counter)
    failed_by_op: Counter = Counter()
    failed_by_test: Counter = Counter()
    skipped_by_reason: Counter = Counter()
    xfailed_by_reason: Counter = Counter()
    xfailed_by_op: dict[str, Counter] = defaultdict(Counter)
    apple_disagreements: dict[str, list] = defaultdict(list)
    radar_stops_passed: dict[str, Counter] = defaultdict(Counter)
    tested: dict[str, set] = defaultdict(set)
    for nodeid, case in cases.items():
        counts = per_precision[case.get("precision", "fp32")]
        counts["cases"] += 1
        counts[case["outcome"]] += 1
        if case.get("executed"):
            counts["executed"] += 1
            counts["executed_" + case["outcome"]] += 1
            if case["outcome"] == "passed":
                tested[case["opset"]].update(case["ops"])
        if case["outcome"] == "failed":
            failed_by_test[nodeid.split("[")[0]] += 1
            for op in set(case.get("ops", ())) - PLUMBING_OPS:
                failed_by_op[op] += 1
        elif case["outcome"] == "skipped":
            skipped_by_reason[case.get("reason", "")] += 1
        elif case["outcome"] == "xfailed" and case.get("reason", "").startswith(APPLE_DISAGREEMENT):
            # not an erratum of the suite: a case where kiln differs from Apple's runtime
            counts["disagrees_with_apple"] += 1
            apple_disagreements[case["reason"]].append(nodeid)
        elif case["outcome"] == "xfailed":
            xfailed_by_reason[case.get("reason", "")] += 1
            for op in set(case.get("ops", ())) - PLUMBING_OPS:
                xfailed_by_op[case.get("reason", "")][op] += 1
        for _, reason in case.get("radar_stops_passed", ()):
            radar_stops_passed[reason][case["outcome"]] += 1
    totals = sum(per_precision.values(), Counter())
    return {
        "totals": dict(sorted(totals.items())),
        "per_precision": {p: dict(sorted(c.items())) for p, c in sorted(per_precision.items())},
        "failed_by_op": dict(failed_by_op.most_common()),
        "failed_by_test": dict(failed_by_test.most_common()),
        "skipped_by_reason": dict(skipped_by_reason.most_common()),
        "xfailed_by_reason": dict(xfailed_by_reason.most_common()),
        # per reason, the op types the executed xfailed cases ran (besides const/cast)
        "xfailed_by_op": {r: dict(c.most_common()) for r, c in xfailed_by_op.items()},
        # cases where kiln is known to differ from Apple's runtime (kiln.mil.coverage.APPLE_DISAGREEMENTS):
        # counted against kiln (their outcome is xfailed, never passed), per reason with the cases
        "apple_disagreements": {r: sorted(c) for r, c in sorted(apple_disagreements.items())},
        # the suite's radar skips/xfails (defects of Apple's runtime) passed over: outcome on kiln
        "radar_stops_passed": {r: dict(sorted(c.items())) for r, c in sorted(radar_stops_passed.items())},
        "tested_ops": {opset: sorted(ops) for opset, ops in sorted(tested.items())},
    }


def progress_path(summary_path: str) -> str:
    """Where a run writing ``summary_path`` logs each finished case as it goes (JSON lines)."""
    return os.path.splitext(summary_path)[0] + ".progress.jsonl"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        summary = config.getoption("--kiln-summary")
        if summary:
            os.makedirs(os.path.dirname(os.path.abspath(summary)), exist_ok=True)
        config._kiln_collector = _Collector(progress_path(summary) if summary else None)


def pytest_runtest_logreport(report):
    collector = getattr(_CONFIG, "_kiln_collector", None) if _CONFIG else None
    if collector is not None:
        collector.record(report)


_CONFIG = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    global _CONFIG
    _CONFIG = session.config
    session.config._kiln_started = time.time()


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    collector = getattr(config, "_kiln_collector", None)
    path = config.getoption("--kiln-summary")
    if collector is None or not path:
        return
    import coremltools as ct

    from kiln.foundation.fsutil import write_json

    summary = {
        "suite": f"coremltools {ct.__version__} {SUITE_PACKAGE}",
        "targets": os.environ.get("PYMIL_TEST_TARGETS"),
        "include_fp32": os.environ.get("INCLUDE_MIL_FP32_UNIT_TESTS") == "1",
        "args": list(config.invocation_params.args),
        "wall_seconds": round(time.time() - config._kiln_started, 1),
        **summarize(collector.cases),
        "cases": dict(sorted(collector.cases.items())),
    }
    write_json(path, summary)
    collector.progress.close()
    os.unlink(progress_path(path))  # the summary holds every case now
