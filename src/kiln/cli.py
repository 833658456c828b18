"""kiln: build speech models into Core ML, and run and compile ML Programs anywhere.

    kiln predict MODEL --inputs in.npz [--precision fp16|fp32] --out out.npz   run an ML Program on Linux
    kiln inspect MODEL                                                         contract, ops, weights
    kiln ops [--coverage]                                                      the executor's op registry
    kiln compile X.mlpackage -o X.mlmodelc                                     compile without Xcode
    kiln new-model {vad,stt,tts} NAME                                          scaffold a model family
    kiln check-config [config.yaml]                                            validate a config
    kiln check results/<model> [...]                                           artifacts match their job records
    kiln publish MODEL [--repo-id ORG/NAME] [--dry-run]                        stage (and upload) a model repo
    kiln verify FOLDER [--workdir DIR] [--timeout S]                            rebuild, account for every file
    kiln pull [results/<model> ...] [--remote NAME]                            fetch the recorded build, safely

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

# exit code 2 for every diagnosed error, as argparse uses for usage errors
from kiln.foundation.errors import EXIT_KILN_ERROR, run_command  # noqa: F401

#: modules contributing subcommands (each defines ``add_commands(subparsers)``)
COMMAND_MODULES = ("kiln.mil.cli", "kiln.compile.cli", "kiln.scaffold", "kiln.workflow.pull")


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
    from pathlib import Path

    from kiln.distribution.publish import KILN_DIR
    from kiln.distribution.verify import check_published
    from kiln.integrity.artifacts import IntegrityError, check_results

    failed = 0
    for model_dir in args.results:
        # a published folder lists its artifacts by their place in it (its job records name the
        # building checkout's paths, which were found in the current directory's results instead)
        published = (Path(model_dir) / KILN_DIR / "provenance.json").is_file()
        artifacts, problems = (check_published if published else check_results)(model_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed += len(problems)
        print(f"{model_dir}: {len(artifacts) - len(problems)}/{len(artifacts)} "
              f"{'published' if published else 'recorded'} artifacts match")
    if failed:
        raise IntegrityError(f"{failed} artifact(s) do not match their job records (listed above)")
    return 0


def _publish(args) -> int:
    from kiln.config import load_config
    from kiln.distribution.publish import publish

    result = publish(load_config(args.config), args.model, repo_id=args.repo_id, dry_run=args.dry_run,
                     out_dir=args.out, private=args.private)
    print(f"staged {result['model']}: {result['artifacts']} artifacts in {result['folder']}")
    if result["uploaded"]:
        print(f"uploaded to {result['repo_id']}: {result['uploaded']['commit_url']}")
    elif args.dry_run:
        print("dry run: nothing uploaded")
    return 0


def _verify(args) -> int:
    from kiln.distribution.verify import VerifyError, verify

    result = verify(args.folder, workdir=args.workdir, cores=args.cores, report=args.report, timeout=args.timeout)
    if not result["reproduced"]:
        raise VerifyError(f"{args.folder}: {result['counts']['differing']} item(s) differ from the rebuild "
                          f"(listed above)")
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
    pub = sub.add_parser("publish", help="stage a built model as a Hugging Face model repo and upload it",
                         description="Stage publish/<model>/ (bundles and packages under the consumer's file "
                                     "names, quantized variants, reports, model card, records, locks) and upload "
                                     "it with huggingface_hub (token: HF_TOKEN). Refused without a token or from a "
                                     "working tree with uncommitted changes, unless --dry-run.")
    pub.add_argument("model")
    pub.add_argument("--repo-id", help="ORG/NAME on the Hub (HF_ENDPOINT selects another Hub)")
    pub.add_argument("--dry-run", action="store_true", help="stage the folder only; upload nothing")
    pub.add_argument("--out", help="the staging folder (default publish/<model>)")
    pub.add_argument("--private", action="store_true", help="create the repo private")
    pub.add_argument("--config", default="config.yaml")
    pub.set_defaults(func=_publish)
    ver = sub.add_parser("verify", help="rebuild a published folder or results/<model> and compare",
                         description="Rebuild the recorded model from its recorded sources, settings and "
                                     "toolchain in a scratch directory, stage it, and account for every file of "
                                     "the folder: packages, bundles, side files and plots byte for byte, records "
                                     "value for value, the model card regenerated; a missing or extra file "
                                     "differs.")
    ver.add_argument("folder", help="a folder staged by kiln publish, or results/<model>")
    ver.add_argument("--workdir", help="scratch directory: new, empty, or one an earlier verify made (kept; "
                                       "reused by a later verify); any other directory is refused")
    ver.add_argument("--cores", type=int, default=2)
    ver.add_argument("--timeout", type=float, default=None,
                     help="stop the rebuild after this many seconds (default: 4 hours)")
    ver.add_argument("--report", help="write the JSON report here")
    ver.set_defaults(func=_verify)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # coremltools logs warnings about untested torch/sklearn versions and its missing macOS runtime
    # on import; they say nothing about the command the user ran
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
