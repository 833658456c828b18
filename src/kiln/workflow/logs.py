"""Run a job with its logging (and warnings) sent to its Snakemake log file and to stderr."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Callable

from kiln.errors import KilnError

log = logging.getLogger("kiln")


def setup(log_file: str | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def limit_threads(threads: int | None) -> None:
    """Keep a job within the cores Snakemake gave it (torch defaults to every core)."""
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))


def run_job(log_file: str | None, job: Callable[..., Any], *args: Any, threads: int | None = None) -> Any:
    """Call ``job(*args)``; a failure is written to the log file before the process exits non-zero.

    kiln's own errors are diagnostics (one line naming the file, key or op); anything else is a bug
    and keeps its traceback.
    """
    setup(log_file)
    logging.getLogger("coremltools").setLevel(logging.WARNING)  # its INFO logs every graph pass
    try:
        limit_threads(threads)
        return job(*args)
    except KilnError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(1)
    except Exception:
        log.exception("unexpected failure")
        sys.exit(1)
