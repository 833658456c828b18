"""Validate: run the source model and the Core ML artifacts side by side on identical real inputs,
record per-output errors, task-level agreement and latency per backend, and write metadata.json."""
