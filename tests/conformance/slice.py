"""The fast conformance slice and the op coverage it proves.

``python -m tests.conformance.slice select SUMMARY.json --out tests/conformance/fast_slice.txt``
    picks, from a conformance run's summary, a small set of passing cases that together execute every
    (opset, op type) pair the run executed in a passing case: greedy set cover, cheapest case first
    on ties, so ``make test`` stays fast.

``python -m tests.conformance.slice merge RUN.json [RERUN.json ...] --out merged.json [--by-test]``
    one summary of several runs (summaries or ``.progress.jsonl`` files); a case's last outcome wins.
    Some tests draw parameters when pytest collects them (unseeded: e.g. ``TestNormalizationLayerNorm``'s
    ``rank_and_axes``), so their case ids differ from one collection to the next. With ``--by-test`` a
    later input replaces every earlier case of each test function it holds (use it when the later
    runs ran those test functions whole, e.g. a re-run of whole files).

``python -m tests.conformance.slice coverage SUMMARY.json --out src/kiln/mil/conformance_coverage.json``
    writes, from the fast slice's own run, the op types each opset's passing cases executed on kiln,
    with one case that executed each. ``kiln ops --coverage`` reads it; ``test_fast_slice.py`` checks
    that the slice still executes every op it lists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

def load_cases(path: Path) -> dict[str, dict]:
    """The cases of a summary, or of a run's progress file (``*.progress.jsonl``, one case a line)."""
    with open(path, encoding="utf-8") as handle:
        if path.suffix == ".jsonl":
            cases = {}
            for line in handle:
                if line.strip():
                    entry = json.loads(line)
                    cases[entry.pop("case")] = entry
        else:
            cases = json.load(handle)["cases"]
    return {" ".join(case_id.split()): case for case_id, case in cases.items()}


def test_function(case_id: str) -> str:
    """``file::Class::test_name`` of a case id (its parameters dropped)."""
    return case_id.split("[", 1)[0]


def merge(paths: list[Path], by_test: bool = False) -> dict:
    """One summary of several runs: a case's last outcome wins (a re-run of some cases, a run of
    the cases another environment could not run), totals recomputed by the plugin's own rule.
    ``by_test``: a later run's cases replace all earlier cases of their test functions."""
    from .plugin import summarize

    cases: dict[str, dict] = {}
    for path in paths:
        later = load_cases(path)
        if by_test:
            replaced = {test_function(case_id) for case_id in later}
            cases = {k: v for k, v in cases.items() if test_function(k) not in replaced}
        cases.update(later)
    return {"merged_from": [str(p) for p in paths], "by_test": by_test, **summarize(cases),
            "cases": dict(sorted(cases.items()))}


def passing_pairs(case: dict) -> set[tuple[str, str]]:
    if case.get("outcome") != "passed" or not case.get("executed"):
        return set()
    return {(case["opset"], op) for op in case.get("ops", ())}


def select(cases: dict[str, dict]) -> list[str]:
    """Greedy set cover of the passing (opset, op) pairs; ties go to the shorter case."""
    pairs = {case_id: passing_pairs(case) for case_id, case in cases.items()}
    pairs = {case_id: p for case_id, p in pairs.items() if p}
    uncovered = set().union(*pairs.values()) if pairs else set()
    chosen = []
    while uncovered:
        best = max(
            sorted(pairs),
            key=lambda c: (len(pairs[c] & uncovered), -cases[c].get("duration", 0.0)),
        )
        chosen.append(best)
        uncovered -= pairs.pop(best)
    return sorted(chosen)


def coverage(cases: dict[str, dict]) -> dict:
    """Per opset: each op type a passing case executed on kiln, with the first such case."""
    tested: dict[str, dict[str, str]] = {}
    for case_id in sorted(cases):
        for opset, op in sorted(passing_pairs(cases[case_id])):
            tested.setdefault(opset, {}).setdefault(op, case_id)
    return {
        "source": "tests/conformance/fast_slice.txt run by `make conformance-slice`",
        "tested": {opset: dict(sorted(ops.items())) for opset, ops in sorted(tested.items())},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.slice", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("select", "coverage", "merge"):
        cmd = sub.add_parser(name)
        cmd.add_argument("summaries", nargs="+", type=Path, help="conformance summary JSON file(s)")
        cmd.add_argument("--out", type=Path, required=True)
        if name == "merge":
            cmd.add_argument("--by-test", action="store_true",
                             help="a later input replaces every earlier case of each test function it holds")
    args = parser.parse_args(argv)
    cases: dict[str, dict] = {}
    for path in args.summaries:
        cases.update(load_cases(path))

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from kiln.foundation.fsutil import atomic_file, write_json

    if args.command == "merge":
        merged = merge(args.summaries, by_test=args.by_test)
        write_json(args.out, merged)
        print(f"{args.out}: {json.dumps(merged['totals'])}")
        return 0

    if args.command == "select":
        chosen = select(cases)
        with atomic_file(args.out) as handle:
            handle.write("# the fast conformance slice: regenerate with `make conformance-slice`\n")
            handle.writelines(f"{case_id}\n" for case_id in chosen)
        print(f"{args.out}: {len(chosen)} cases")
    else:
        result = coverage(cases)
        write_json(args.out, result)
        print(f"{args.out}: " + ", ".join(f"{o} {len(ops)} ops" for o, ops in result["tested"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
