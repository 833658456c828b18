"""kiln: build speech models into Core ML, and run and compile ML Programs anywhere.

    kiln predict MODEL --inputs in.npz [--precision fp16|fp32] --out out.npz   run an ML Program on Linux
    kiln inspect MODEL                                                         contract, ops, weights
    kiln ops [--coverage]                                                      the executor's op registry
    kiln compile X.mlpackage -o X.mlmodelc                                     compile without Xcode
    kiln new-model {vad,stt,tts} NAME                                          scaffold a model family
    kiln check-config [config.yaml]                                            validate a config

Each subsystem contributes its subcommands through an ``add_commands(subparsers)`` function; the
table below lists them. kiln's own errors print one line naming the culprit and exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import importlib
import sys

from kiln.errors import KilnError

#: modules contributing subcommands (each defines ``add_commands(subparsers)``)
COMMAND_MODULES = ("kiln.mil.cli", "kiln.compile.cli", "kiln.scaffold")


def _check_config(args) -> int:
    from kiln.config import load_config
    from kiln.models import check_models

    config = load_config(args.config)
    check_models(config)
    for name, model in config.models.items():
        tag = " (synthetic)" if model.synthetic else ""
        print(f"{name}{tag}: family {model.family}, source {model.source['kind']}, "
              f"components {', '.join(model.components)}")
    print(f"{args.config}: valid")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check-config", help="validate config.yaml against its schema")
    check.add_argument("config", nargs="?", default="config.yaml")
    check.set_defaults(func=_check_config)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # coremltools logs warnings about untested torch/sklearn versions and its missing macOS runtime
    # on import; they say nothing about the command the user ran
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KilnError as exc:
        print(f"kiln: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
