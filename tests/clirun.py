"""Running ``kiln`` the way users do: the console script in a separate process, with a time bound, so a
regression that spins (an alias bomb, a runaway allocation) fails the test instead of hanging it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KILN = Path(sys.executable).parent / "kiln"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def kiln(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 60, env: dict | None = None) -> Result:
    """``kiln *args`` in ``cwd`` with this checkout's sources first on the path."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                   **(env or {})}
    start = time.monotonic()
    out = subprocess.run([str(KILN), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                         timeout=timeout)
    return Result(out.returncode, out.stdout, out.stderr, time.monotonic() - start)


def assert_one_line_error(result: Result, kind: str, *words: str) -> str:
    """Exit code 2, one line on stderr (``kiln: error: <kind>: ...``) holding every word, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.error_lines
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"kiln: error: {kind}: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def snapshot(root: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with (size, mtime_ns): equal snapshots mean nothing was created,
    removed or rewritten (temporaries and ``.incomplete`` files included)."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[path.relative_to(root).as_posix()] = (info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found
