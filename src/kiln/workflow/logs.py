"""Send a job's logging (and warnings) to its Snakemake log file and to stderr."""

from __future__ import annotations

import logging
import sys
import warnings


def setup(log_file: str | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
