"""``kiln predict`` / ``kiln inspect`` / ``kiln ops``: the executor's command-line interface.

:func:`add_commands` registers them on the ``kiln`` console command; every subcommand sets ``func``
(parsed args -> exit code) and raises kiln errors, which `kiln.foundation.errors.run_command` reports (exit 2)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from kiln.foundation.errors import InputFileError, OutputError
from kiln.foundation.fsutil import atomic_file


def add_commands(subparsers) -> None:
    """Register ``predict``, ``inspect`` and ``ops`` on an argparse subparsers object."""
    predict = subparsers.add_parser("predict", help="run a Core ML ML Program on Linux with kiln's executor")
    predict.add_argument("model", help=".mlpackage or .mlmodelc")
    predict.add_argument("--inputs", required=True, help=".npz holding one array per model input")
    predict.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    predict.add_argument("--out", required=True, help=".npz to write the outputs to")
    predict.add_argument("--function", default=None, help="program function (default: main)")
    predict.set_defaults(func=cmd_predict)

    inspect = subparsers.add_parser("inspect", help="describe an ML Program: contract, ops, weights")
    inspect.add_argument("model", help=".mlpackage or .mlmodelc")
    inspect.set_defaults(func=cmd_inspect)

    ops = subparsers.add_parser("ops", help="list the MIL ops kiln implements")
    ops.add_argument(
        "--coverage", action="store_true",
        help="also list ops coremltools defines but kiln lacks, and ops no conformance case executed",
    )
    ops.set_defaults(func=cmd_ops)


def read_inputs(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (one per model input), or an :class:`InputFileError` naming it."""
    import zipfile
    import zlib

    source = Path(path)
    if not source.is_file():
        raise InputFileError(f"--inputs {path}: " + ("is a directory" if source.is_dir() else "no such file"))
    try:
        data = np.load(source, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputFileError(f"--inputs {path}: a single .npy array; kiln needs an .npz archive of named "
                                 f"arrays, one per model input (np.savez)")
        with data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputFileError(f"--inputs {path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def output_npz(path: str, inputs: dict[str, str] | None = None) -> Path:
    """Where ``--out`` really writes: the path with ``.npz`` appended when it lacks it (as numpy
    does), in a directory that must exist, and neither one of the command's ``inputs`` (option ->
    path) nor inside one (a model bundle is a directory), however spelled: symlinks, ``..``, a
    hard link."""
    out = Path(path)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    if not out.parent.is_dir():
        raise OutputError(f"--out {path}: directory {out.parent} does not exist")
    for option, given in (inputs or {}).items():
        relation = _relation(out, Path(given))
        if relation:
            raise OutputError(f"--out {path}: {out} {relation} {option} {given}; writing the outputs there would "
                              f"replace what the command reads, choose another path")
    if out.is_dir():
        raise OutputError(f"--out {path}: {out} is a directory")
    return out


def _relation(out: Path, given: Path) -> str | None:
    """``"is"`` when ``out`` names the file ``given`` (through symlinks, ``..`` or a hard link),
    ``"lies inside"`` when it is below the directory ``given``, else None."""
    target, source = out.resolve(), given.resolve()
    if target == source:
        return "is"
    if source in target.parents:
        return "lies inside"
    try:
        return "is" if os.path.samefile(out, given) else None   # a hard link: another name of the file
    except OSError:   # either does not exist
        return None


def cmd_predict(args) -> int:
    from .model import load_model

    model = load_model(args.model)
    inputs = read_inputs(args.inputs)
    out = output_npz(args.out, {"--inputs": args.inputs, "the model": args.model})
    result = model.predict(inputs, precision=args.precision, function=args.function)
    arrays = {name: np.asarray(value) for name, value in result.items() if isinstance(value, np.ndarray)}
    arrays.update({f"state:{name}": value for name, value in result.states.items()})
    with atomic_file(out, "wb") as handle:
        np.savez(handle, **arrays)
    for name, value in arrays.items():
        print(f"{name}: {value.dtype}{list(value.shape)}")
    print(f"wrote {out} (precision {result.precision})")
    return 0


def inspect_report(model) -> str:
    """The text ``kiln inspect`` prints."""
    from kiln.coreml.blob import BlobFile

    lines = [
        f"model: {model.path} ({model.kind})",
        f"specification version: {model.specification_version}",
        f"functions: {', '.join(model.function_names)}",
        f"opset: {model.opset()}",
        "inputs:",
        *(f"  {spec.describe()}" for spec in model.inputs()),
        "outputs:",
        *(f"  {spec.describe()}" for spec in model.outputs()),
        "ops:",
        *(f"  {count:5d}  {op_type}" for op_type, count in model.op_histogram().items()),
    ]
    by_dtype: dict[str, int] = {}
    for path in model.weight_files():
        with BlobFile(path) as blob:
            for record in blob.records():
                by_dtype[record.dtype] = by_dtype.get(record.dtype, 0) + record.size_bytes
    lines.append("weight bytes by dtype:")
    if not by_dtype:
        lines.append("  (no weight file)")
    for dtype, size in sorted(by_dtype.items()):
        lines.append(f"  {dtype:10s} {size:12d}")
    if by_dtype:
        lines.append(f"  {'total':10s} {sum(by_dtype.values()):12d}")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    from .model import load_model

    print(inspect_report(load_model(args.model)))
    return 0


def cmd_ops(args) -> int:
    from .coverage import APPLE_DISAGREEMENTS, coverage

    for opset, cov in coverage().items():
        print(
            f"{opset}: {len(cov.implemented)}/{len(cov.defined)} op types implemented, "
            f"{len(cov.tested)} tested (executed on kiln by a conformance case or a kiln op case), "
            f"{len(cov.disagreements)} with a known disagreement with Apple's runtime"
        )
        if args.coverage:
            print(f"  missing: {', '.join(cov.missing) if cov.missing else '(none)'}")
            untested = sorted(set(cov.implemented) - set(cov.tested))
            print(f"  untested: {', '.join(untested) if untested else '(none)'}")
            if cov.extra:
                print(f"  kiln-only: {', '.join(cov.extra)}")
            for disagreement in APPLE_DISAGREEMENTS:
                if opset in disagreement.opsets:
                    print(f"  {disagreement.reason}")
    if not args.coverage:
        from .registry import OPSETS, implemented_op_types

        print("implemented: " + ", ".join(sorted(implemented_op_types(OPSETS[-1]))))
    return 0


def main(argv=None) -> int:
    """Standalone entry point (``python -m kiln.mil.cli``)."""
    parser = argparse.ArgumentParser(prog="kiln-mil")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    from kiln.foundation.errors import run_command

    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
