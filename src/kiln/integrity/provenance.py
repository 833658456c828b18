"""Toolchain versions recorded in every report (python, torch, coremltools, numpy, nemo, kiln)."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import kiln


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """The commit of the kiln checkout, with ``-dirty`` when the work tree has local changes."""
    root = Path(kiln.__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def toolchain() -> dict:
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "torch": _version("torch"),
        "coremltools": _version("coremltools"),
        "numpy": _version("numpy"),
        "nemo_toolkit": _version("nemo_toolkit"),
        "kiln": {"version": kiln.__version__, "git_commit": git_commit()},
    }
