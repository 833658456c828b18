"""Facts about Core ML files, shared by the executor (`kiln.mil`) and the compiler (`kiln.compile`).

One small layer that reads and writes the on-disk formats and validates them once:

* :mod:`kiln.coreml.paths`       path safety: nothing leaves a package, no symlink is followed
* :mod:`kiln.coreml.manifest`    `.mlpackage` `Manifest.json` read/write, item resolution, the model spec
* :mod:`kiln.coreml.blob`        `weight.bin` (MIL blob storage v2): exact record validation, reader, writer
* :mod:`kiln.coreml.dtypes`      MIL data types: proto codes, blob codes, numpy storage, element codecs
* :mod:`kiln.coreml.ops`         walking a program's ops, nested blocks and blob references
* :mod:`kiln.coreml.mil_text`    `model.mil` (an `.mlmodelc`'s program as text): printer, tokenizer, parser
* :mod:`kiln.coreml.coremldata`  `coremldata.bin` / `analytics/coremldata.bin`: writer and reader
* :mod:`kiln.coreml.errors`      the typed errors of all of the above (each names the file and place)

Nothing here executes or compiles: `kiln.mil` and `kiln.compile` both import this package, and this
package imports neither. Modules are imported on demand (the protobuf ones pull in coremltools).
"""
