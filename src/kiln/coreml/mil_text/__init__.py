"""MIL text (`model.mil`, an `.mlmodelc`'s program as text), in both directions:

* :mod:`kiln.coreml.mil_text.printer`     MILSpec `Program` protobuf -> text (``print_program``)
* :mod:`kiln.coreml.mil_text.tokenizer`   text -> tokens with their offsets
* :mod:`kiln.coreml.mil_text.parser`      tokens -> MILSpec `Program` (``parse_program``)
* :mod:`kiln.coreml.mil_text.grammar`     what printer and parser share: dialects, opset names,
  BLOBFILE keys, key order, element counts
* :mod:`kiln.coreml.mil_text.build_info`  the program's ``buildInfo`` attribute: its entries, merging

Two dialects:

* ``"1.0"``: what Apple's `coremlc` 3500.x writes (Xcode 15). Byte-identical to the golden bundles:
  ``program(1.0)``, every value typed as ``tensor<dtype, [dims]>`` (scalars ``tensor<dtype, []>``),
  ``dict<tensor<string, []>, tensor<string, []>>`` buildInfo.
* ``"1.3"``: what `coremlc` 3505+ writes (Xcode 16+): scalar types printed bare (``string``,
  ``int32``, ``fp32``), so ``string("x")``, ``uint64(64)``, ``dict<string, string>``. Checked against
  a handful of public Apple-compiled bundles only, never against a compiler run here: treat it as
  unverified.

Layout shared by both (from the golden files): function header at 4 spaces, operations at 12,
the block's ``} -> (outputs);`` at 8; function inputs sorted by name; an operation is
``{outputs} = {op}({inputs sorted by key})[{attributes sorted by key}];``; floats are C99 hex
floats (``float.hex()`` with trailing zeros stripped; fp16 widened first); no final newline.

Not seen in any Apple output available here, so kiln's own choice (documented, parseable,
unverified): tensors of rank >= 2 print their elements flat in row-major order; nested blocks
(cond / while_loop / scan) print after the operation's attributes as
``{ block(inputs) { ops } -> (outputs); ... }``; an argument of several bindings (variadic
inputs such as concat's ``values``) prints as ``(a, b)``; strings escape ``\\``, ``"`` and control
characters C-style. `docString` fields are not part of the text.
"""
