"""Apple's own compiler, where it exists (macOS with Xcode or the command line tools):
``xcrun coremlcompiler compile X.mlpackage OUTDIR`` writes ``OUTDIR/X.mlmodelc``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kiln.compile.compare import compare_bundles
from kiln.compile.errors import AppleCompilerError
from kiln.coreml.paths import is_mlmodelc
from kiln.foundation.fsutil import atomic_dir

__all__ = ["compare_bundles", "compile_with_apple", "find_coremlcompiler"]


def find_coremlcompiler() -> list[str] | None:
    """The command prefix that runs Apple's compiler, or None where there is none (Linux, or
    macOS without developer tools)."""
    if sys.platform != "darwin":
        return None
    xcrun = shutil.which("xcrun")
    if xcrun is None:
        return None
    probe = subprocess.run([xcrun, "--find", "coremlcompiler"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip():
        return None
    return [xcrun, "coremlcompiler"]


def compile_with_apple(package: str | Path, output: str | Path) -> Path:
    """Compile `package` with Apple's `coremlcompiler` into `output` (written atomically)."""
    command = find_coremlcompiler()
    if command is None:
        raise AppleCompilerError(
            "Apple's coremlcompiler is not available (needs macOS with Xcode command line tools); "
            "use kiln.compile.compile_package instead"
        )
    package, output = Path(package), Path(output)
    with tempfile.TemporaryDirectory(prefix="kiln-coremlc-") as scratch:
        result = subprocess.run([*command, "compile", str(package), scratch], capture_output=True, text=True)
        produced = Path(scratch) / (package.name.removesuffix(".mlpackage") + ".mlmodelc")
        if result.returncode != 0 or not produced.is_dir():
            raise AppleCompilerError(
                f"coremlcompiler failed on {package} (exit {result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )
        with atomic_dir(output, replaceable=is_mlmodelc, kind="an .mlmodelc bundle", inputs=[package]) as staging:
            shutil.rmtree(staging)
            shutil.copytree(produced, staging)
    return output
