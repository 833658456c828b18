"""Quantize: a registry of compression strategies on ``coremltools.optimize.coreml``, each scored
against the float Core ML baseline on the validation inputs (size, quality, PSNR, task metric,
latency), checked against torch running the variant's dequantized weights (``dequantized``), ranked
by the family's task metric and summarised in ``quantization_summary.json`` with plots."""
