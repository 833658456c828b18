"""Path safety inside Core ML directories: a relative path from a Manifest or a ``BLOBFILE`` never
leaves its package, and kiln never follows a symlink below the package root.

The root itself is what the user named (it may be a symlink, as a test fixture or a checkout may
link a package); everything below it must be a plain directory or regular file, so a package cannot
make kiln read (and a compiler copy, and DVC publish) a file from elsewhere on the host.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from kiln.coreml.errors import PackageError


def member(root: Path, relative: str, *, what: str, source: object = None) -> Path:
    """``relative`` (a POSIX path) below ``root``, refusing an empty or absolute path, ``..`` and
    any component that is a symlink. ``what`` names the reference in errors, ``source`` the file
    that holds it."""
    pure = PurePosixPath(relative) if isinstance(relative, str) else None
    if not relative or pure is None or pure.is_absolute() or ".." in pure.parts or "\0" in relative:
        raise PackageError(f"{what} {relative!r} points outside the package", source if source is not None else root)
    path = Path(root)
    for part in pure.parts:
        path = path / part
        if path.is_symlink():
            raise PackageError(f"{what} {relative!r} passes through the symlink {path}; kiln never follows "
                               f"links inside a package", source if source is not None else root)
    return path


def regular_file(path: Path, what: str) -> os.stat_result:
    """``lstat`` of ``path``, which must be a regular file (not a symlink, device, fifo or directory)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise PackageError(f"{what} is missing", path) from None
    except OSError as exc:
        raise PackageError(f"{what} cannot be read: {exc.strerror}", path) from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise PackageError(f"{what} is {kind}; kiln reads only regular files inside a package", path)
    return info


def files_below(root: Path) -> list[Path]:
    """Every regular file below ``root`` (sorted), refusing symlinks and special files."""
    found = []
    for directory, subdirs, names in os.walk(root):
        for name in sorted(subdirs):
            if os.path.islink(os.path.join(directory, name)):
                raise PackageError("symlinked directory inside a package; kiln never follows links",
                                   os.path.join(directory, name))
        for name in names:
            path = Path(directory) / name
            regular_file(path, "file")
            found.append(path)
    return sorted(found)


# --- recognising what kiln wrote (so a writer replaces only its own kind of output) -------------

#: files Snakemake may add to a directory output
_BOOKKEEPING = frozenset({".snakemake_timestamp"})
MLMODELC_FILES = frozenset({"model.mil", "coremldata.bin", "metadata.json", "analytics/coremldata.bin"})


def _relative_files(root: Path) -> set[str] | None:
    try:
        return {p.relative_to(root).as_posix() for p in files_below(root)} - _BOOKKEEPING
    except PackageError:
        return None


def is_mlmodelc(path: Path) -> bool:
    """True for a real directory holding only an `.mlmodelc` bundle's files (no links)."""
    files = _relative_files(path)
    return bool(files) and "model.mil" in files and all(
        name in MLMODELC_FILES or (name.startswith("weights/") and name.endswith(".bin")) for name in files)


def is_mlpackage(path: Path) -> bool:
    """True for a real directory holding only an `.mlpackage`'s files: Manifest.json and Data/."""
    files = _relative_files(path)
    return bool(files) and "Manifest.json" in files and all(
        name == "Manifest.json" or name.startswith("Data/") for name in files)
