"""tests/durations.json from a measured run: seconds per test id (setup, call and teardown), which
tests/conftest.py sums per work unit to queue the longest units first. After a change that moves
the slow tests, refresh it from a `make test` run with a junit report:

    python -m pytest -q -n 2 --dist loadgroup --junitxml=/tmp/run.xml tests
    python tests/helpers/durations.py /tmp/run.xml > tests/durations.json

A stale entry only changes the order the units are queued in, never what a test runs or checks."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: tests quicker than this are left out (conftest counts an unlisted test as quick)
LISTED_FROM_SECONDS = 1.0


def node_id(classname: str, name: str) -> str:
    """junit's dotted classname (module, then any classes) and name -> pytest's node id. Under
    `--dist loadgroup` the ids carry xdist's "@<work unit>" suffix, which junit splits at its "::"
    (a unit named by a test id) or leaves on the name: both are dropped."""
    if "@" in classname:
        classname = classname.partition("@")[0].removesuffix(f".{name}")
    name = name.partition("@")[0]
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut]) + ".py"
        if (REPO / module).is_file():
            return "::".join([module, *parts[cut:], name])
    raise ValueError(f"no test module for junit classname {classname!r}")


def durations(reports: list[Path]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for report in reports:
        for case in ET.parse(report).iter("testcase"):
            if case.get("classname"):
                nodeid = node_id(case.get("classname"), case.get("name"))
                seconds[nodeid] = max(seconds.get(nodeid, 0.0), float(case.get("time", 0)))
    return {k: round(v, 1) for k, v in sorted(seconds.items()) if v >= LISTED_FROM_SECONDS}


if __name__ == "__main__":
    print(json.dumps(durations([Path(p) for p in sys.argv[1:]]), indent=0))
