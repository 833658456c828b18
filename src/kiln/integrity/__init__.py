"""Integrity: content digests and their cache (``digests``), artifacts against the sha256 their
job recorded (``artifacts``: ``kiln check``), and where a build came from (``provenance``)."""
