"""Foundation: what every layer uses. Typed errors and the CLI's error contract (``errors``),
atomic files and hashes (``fsutil``), bounded YAML and JSON reads (``yamlio``, ``jsonio``), test
failpoints (``failpoints``)."""
