"""Export: wrap -> ``torch.jit.trace`` with fixed shapes -> ``ct.convert`` to ``mlprogram`` ->
deterministic, atomic save. Torch ops that coremltools cannot convert get converters in
:mod:`kiln.export.torch_ops`."""
