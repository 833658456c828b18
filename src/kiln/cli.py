"""kiln: build speech models into Core ML, and run and compile ML Programs anywhere.

    kiln predict MODEL --inputs in.npz [--precision fp16|fp32] --out out.npz   run an ML Program on Linux
    kiln inspect MODEL                                                         contract, ops, weights
    kiln ops [--coverage]                                                      the executor's op registry
    kiln compile X.mlpackage -o X.mlmodelc                                     compile without Xcode
    kiln new-model {vad,stt,tts} NAME                                          scaffold a model family
    kiln check-config [config.yaml]                                            validate a config
    kiln check results/<model> [...]                                           artifacts match their job records

Each subsystem contributes its subcommands through an ``add_commands(subparsers)`` function; the
table below lists them. Exit codes: 0 success; 2 a kiln error (bad model, config, input or output
path: one line on stderr naming the culprit, no traceback) or a usage error (argparse); 1 is left to
crashes (a Python traceback means a kiln bug). Subcommands raise, this module reports.
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


def _check(args) -> int:
    from kiln.integrity import IntegrityError, check_results

    failed = 0
    for model_dir in args.results:
        artifacts, problems = check_results(model_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed += len(problems)
        print(f"{model_dir}: {len(artifacts) - len(problems)}/{len(artifacts)} recorded artifacts match")
    if failed:
        raise IntegrityError(f"{failed} artifact(s) do not match their job records (listed above)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check-config", help="validate config.yaml against its schema")
    check.add_argument("config", nargs="?", default="config.yaml")
    check.set_defaults(func=_check_config)
    verify = sub.add_parser("check", help="check that built artifacts match the sha256 their jobs recorded",
                            description="Check every package, bundle and checkpoint under results/<model> "
                                        "against the sha256 its job recorded (e.g. after dvc pull).")
    verify.add_argument("results", nargs="+", help="a results/<model> directory")
    verify.set_defaults(func=_check)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # coremltools logs warnings about untested torch/sklearn versions and its missing macOS runtime
    # on import; they say nothing about the command the user ran
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return run_command(build_parser().parse_args(argv))


#: exit code of every diagnosed error (argparse uses the same for usage errors)
EXIT_KILN_ERROR = 2


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; a kiln error becomes one line on stderr and exit code 2."""
    try:
        return int(args.func(args) or 0)
    except KilnError as exc:
        print(f"kiln: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_KILN_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
