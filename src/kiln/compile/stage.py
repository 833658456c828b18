"""The compile stage: choose the compiler, compile, cross-check, verify the round trip."""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping

import numpy as np

from kiln.compile.errors import CompileError
from kiln.foundation.fsutil import tree_size

log = logging.getLogger("kiln.compile")


def round_trip(package: Path, bundle: Path, inputs: Mapping[str, np.ndarray], digests=None) -> dict:
    """The bundle is the package, checked structurally: its ``model.mil`` parses back to the
    package's program and its weight files are the package's (sha256); then kiln's executor runs
    the bundle once, on the validation inputs, and must give every declared output.

    The weight files hash on a second thread (hashlib releases the GIL) while ``model.mil`` is parsed
    and the bundle runs: on a GB-size encoder the hashing is as long as the execution. A bundle whose
    weights differ is still refused, only after its (harmless) execution."""
    from kiln.compile.compare import program_differences, weight_differences, weight_files
    from kiln.coreml.manifest import read_package
    from kiln.integrity.digests import DigestCache
    from kiln.mil import load_model

    digests = digests if digests is not None else DigestCache(None)
    source = read_package(package)
    weights = weight_files(source, bundle)  # validates the package's blob records once
    files = [path for _, ours, theirs in weights for path in (ours, theirs) if path.is_file()]
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(lambda: [digests.file_digest(path) for path in files])
        try:
            model = load_model(bundle)  # parses model.mil once, for the check and the execution
            differences = program_differences(source, bundle, parsed=model.program)
            if differences:
                raise CompileError(f"{bundle}: the bundle is not the package's program: " + "; ".join(differences))
            outputs = model.predict(inputs, precision="fp32")
        finally:
            hashing.result()
    differences = weight_differences(weights, digests)  # digests known by now
    if differences:
        raise CompileError(f"{bundle}: the bundle is not the package's program: " + "; ".join(differences))
    declared = {spec.name for spec in model.outputs()}
    if set(outputs) != declared:
        raise CompileError(f"{bundle}: executing the bundle gave outputs {sorted(outputs)}, it declares "
                           f"{sorted(declared)}")
    return {"program": "identical", "weights": "identical", "execution": "executed"}


def compile_component(package: Path, bundle: Path, settings: Mapping[str, str],
                      check_inputs: Mapping[str, np.ndarray] | None = None, digests=None) -> dict:
    """Compile ``package`` into ``bundle`` and record how. ``digests``: the sha256 cache (default
    the checkout's, shared with the staleness ledger): each weight file is hashed once, for the
    round trip and the bundle's digest alike."""
    from kiln.compile import compare_bundles, compile_package, find_coremlcompiler
    from kiln.compile.apple import compile_with_apple
    from kiln.integrity.digests import DigestCache

    digests = digests if digests is not None else DigestCache.default()

    choice = settings.get("compiler", "auto")
    dialect = settings.get("dialect", "1.0")
    apple = find_coremlcompiler()
    if choice == "apple" and apple is None:
        raise CompileError("config asks for compile.compiler: apple, but `xcrun coremlcompiler` is not "
                           "available here (macOS with Xcode only); use auto or kiln")
    use_apple = apple is not None and choice in ("auto", "apple")
    started = time.perf_counter()
    differences = None
    if use_apple:
        compile_with_apple(package, bundle)
        with tempfile.TemporaryDirectory() as tmp:
            ours = compile_package(package, Path(tmp) / bundle.name, dialect=dialect)
            differences = compare_bundles(ours, bundle)
        for line in differences:
            log.warning("kiln vs Apple: %s", line)
    else:
        compile_package(package, bundle, dialect=dialect)
    seconds = time.perf_counter() - started
    log.info("compiled %s with %s in %.2f s", bundle, "Apple's coremlcompiler" if use_apple else "kiln",
             seconds)
    result = {
        "compiler": "apple" if use_apple else "kiln",
        "compiler_setting": choice,
        "dialect": None if use_apple else dialect,
        "apple_compiler_available": apple is not None,
        "kiln_vs_apple_differences": differences,
        "bundle": None,
        "seconds": round(seconds, 4),
    }
    if check_inputs is not None:
        result["round_trip"] = round_trip(package, bundle, check_inputs, digests)
    result["bundle"] = {"path": str(bundle), "sha256": digests.digest(bundle), "size_bytes": tree_size(bundle)}
    digests.save()
    return result
