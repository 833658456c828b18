"""The full-size entries' resolved contracts, derived the way the prepare job derives them.

For each repository entry whose full-size stand-in is a random checkpoint of the full architecture
(``source: {kind: random, architecture: full, seed: 0}``, as benchmarks/bench_fullsize.py builds
it): build that checkpoint with its family's builder, load it, take ``family.facts(source)``
(recorded, bulk tables left out, in ``fullsize_facts.json``), and resolve each configured
component's contract from those facts and the entry's options with the prepare job's own resolver
(:func:`kiln.workflow.jobs.resolved_contracts`), written as the entry's part of
``resolved_contracts.json`` (the contracts the unit tests bind config.yaml's entries to).
tests/family/test_fullsize_contracts.py checks both files; its slow test derives the facts again.

    python tests/helpers/fullsize_facts.py              # derive the facts (about a minute a model), write both files
    python tests/helpers/fullsize_facts.py --recorded   # re-resolve from the recorded facts (seconds)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HELPERS = Path(__file__).resolve().parent
REPO = HELPERS.parents[1]
#: the repository entries whose full-size stand-in is a random checkpoint of the full architecture
FULLSIZE_MODELS = ("parakeet_tdt_v3", "parakeet_eou", "kokoro")
FULLSIZE_SOURCE = {"kind": "random", "architecture": "full", "seed": 0}
FACTS_FILE = HELPERS / "fullsize_facts.json"
CONTRACTS_FILE = HELPERS / "resolved_contracts.json"
#: a fact whose JSON is larger is a table (a vocabulary, a voice pack), not a size a contract reads
BULK_FACT_BYTES = 4096


def contract_facts(facts: dict) -> dict:
    """The facts without the bulk tables (:data:`BULK_FACT_BYTES`): a contract's axes are sizes,
    and the recorded file stays small enough to read in a diff."""
    return {k: v for k, v in facts.items() if len(json.dumps(v)) <= BULK_FACT_BYTES}


def repository_config():
    """config.yaml as the workflow reads it (not bound to any resolved contract)."""
    from kiln.config import load_config

    return load_config(REPO / "config.yaml")


def derive(model: str, workdir: Path) -> dict:
    """``model``'s full-size facts: its family's ``facts`` of the loaded full-size random checkpoint,
    built in ``workdir`` (the prepare job's load and facts, on the source the random fetch builds)."""
    from kiln.family.registry import get_family
    from kiln.sources import fetch

    family = get_family(repository_config().model(model).family)
    record = fetch(model, family.name, FULLSIZE_SOURCE, workdir, build_random=family.make_random)
    return contract_facts(family.facts(family.load(record)))


def resolve(model: str, facts: dict) -> dict:
    """``{component: {"inputs"|"outputs": {name: {shape, dtype}}}}`` of ``model``'s configured
    components from ``facts``: the prepare job's resolution (what it writes to contracts.json)."""
    from kiln.workflow.jobs import resolved_contracts

    return resolved_contracts(repository_config(), model, facts)


def recorded_facts() -> dict:
    return json.loads(FACTS_FILE.read_text())["facts"]


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(FULLSIZE_MODELS))
    parser.add_argument("--recorded", action="store_true", help="resolve from fullsize_facts.json, derive nothing")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    facts = recorded_facts() if FACTS_FILE.exists() else {}
    if not args.recorded:
        for model in models:
            with tempfile.TemporaryDirectory(prefix=f"fullsize_{model}_") as tmp:
                facts[model] = derive(model, Path(tmp))
            print(f"{model}: {len(facts[model])} facts", file=sys.stderr)
        _write(FACTS_FILE, {"source": FULLSIZE_SOURCE, "facts": dict(sorted(facts.items()))})
    contracts = json.loads(CONTRACTS_FILE.read_text())
    for model in models:
        contracts[model] = resolve(model, facts[model])
    _write(CONTRACTS_FILE, contracts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
