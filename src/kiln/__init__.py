"""kiln: reproducible builds of speech models into Apple Core ML artifacts, with parity proofs."""

__version__ = "0.1.0"
