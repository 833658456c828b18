"""Run a job with its logging (and warnings) sent to its Snakemake log file and to stderr."""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import warnings
from typing import Any, Callable

from kiln.foundation.errors import KilnError
from kiln.workflow import limits

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
    """Keep a job within the cores Snakemake gave it: torch's threads and numpy's BLAS threads
    (both default to every core). Oversubscribed BLAS threads spin: kiln's executor took 8.2 CPU s
    for one full-size Kokoro 5 s step with OpenBLAS's two threads beside another job, 4.3 s with
    one, the same bits."""
    if threads:
        from threadpoolctl import threadpool_limits

        count = max(1, int(threads))
        threadpool_limits(limits=count, user_api="blas")

        def limit_torch(torch) -> None:
            torch.set_num_threads(count)
            threadpool_limits(limits=count, user_api="blas")   # any BLAS torch loaded with it
        when_imported("torch", limit_torch)


def when_imported(name: str, callback: Callable[[Any], None]) -> None:
    """``callback(module)`` now if ``name`` is imported, else as soon as its first import ends: a job
    that never runs torch (metadata, the summaries) then never pays its ~1.5 s import just to be told
    how many threads to use."""
    if name in sys.modules:
        callback(sys.modules[name])
        return

    def exec_then_call(exec_module: Callable[[Any], None], module) -> None:
        exec_module(module)
        callback(module)
    _on_first_import(name, exec_then_call)


def import_without(name: str, blocked: str) -> None:
    """``name``'s first import runs with ``blocked`` unimportable, for as long as it runs (a later
    ``import blocked`` works). coremltools 9.0 imports scikit-learn to offer its sklearn converters and
    then turns them off for any scikit-learn above 1.5.1 (this venv pins 1.9.1, for k-means
    palettization, which imports it when it runs): ~2.5 s of every export and quantize job for nothing."""
    if name in sys.modules or blocked in sys.modules:
        return

    def exec_without(exec_module: Callable[[Any], None], module) -> None:
        sys.modules[blocked] = None   # `import blocked` raises ImportError meanwhile
        try:
            exec_module(module)
        finally:
            if blocked in sys.modules and sys.modules[blocked] is None:
                del sys.modules[blocked]
    _on_first_import(name, exec_without)


def _on_first_import(name: str, run: Callable[[Callable[[Any], None], Any], None]) -> None:
    """Run the first import of ``name`` through ``run(exec_module, module)``."""
    class Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module
                spec.loader.exec_module = lambda module: run(exec_module, module)
            return spec
    sys.meta_path.insert(0, Hook())


def run_job(log_file: str | None, job: Callable[..., Any], *args: Any, threads: int | None = None,
            mem_mb: int | None = None) -> Any:
    """Call ``job(*args)``; a failure is written to the log file before the process exits non-zero.

    ``mem_mb`` (Snakemake's ``resources.mem_mb``) becomes an OS memory limit of the process
    (:mod:`kiln.workflow.limits`), so a runaway job fails with a diagnosis naming its reservation.
    kiln's own errors are diagnostics (one line naming the file, key or op); anything else is a bug
    and keeps its traceback.
    """
    setup(log_file)
    logging.getLogger("coremltools").setLevel(logging.WARNING)  # its INFO logs every graph pass
    try:
        limits.pin_mmap_threshold()  # a job's memory then follows what it holds (see there)
        limit = limits.apply_memory_limit(mem_mb)
        if limit:
            log.info("memory limit: %d MB (address space)", limit // limits.MIB)
        limit_threads(threads)
        import_without("coremltools", "sklearn")
        return job(*args)
    except KilnError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        sys.exit(1)
    except Exception as exc:
        message = limits.out_of_memory_message(exc)
        if message:
            log.error("%s", message)
        else:
            log.exception("unexpected failure")
        sys.exit(1)
