"""``kiln compile X.mlpackage -o X.mlmodelc [--dialect 1.0|1.3]``, registered by the main CLI
through `add_commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

DIALECTS = ("1.0", "1.3")  # kept in step with kiln.coreml.mil_text.grammar.DIALECTS (a test checks)


def _run_compile(args: argparse.Namespace) -> int:
    # Imported here: the compiler pulls in coremltools, which other commands may not need.
    from kiln.compile.compiler import compile_package

    package = Path(args.package)
    output = Path(args.output) if args.output else package.with_suffix(".mlmodelc")
    # kiln errors propagate to kiln.foundation.errors.run_command: one line, exit code 2
    compile_package(package, output, dialect=args.dialect)
    print(output)
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="compile an .mlpackage into an .mlmodelc without Xcode",
        description="Compile an ML Program .mlpackage into an .mlmodelc bundle matching Apple's coremlc 3500.x.",
    )
    parser.add_argument("package", help="the .mlpackage directory")
    parser.add_argument("-o", "--output", help="the .mlmodelc to write (default: beside the package)")
    parser.add_argument("--dialect", choices=DIALECTS, default="1.0",
                        help="MIL text dialect: 1.0 (coremlc 3500.x, verified) or 1.3 (newer coremlc, unverified)")
    parser.set_defaults(func=_run_compile)
