# Compile: .mlpackage -> .mlmodelc with Apple's coremlcompiler where it exists (macOS; kiln's output is
# compared against it), else kiln's own compiler. kiln's executor must give identical outputs on the
# bundle and on the package (first step of the component's validation inputs).


rule compile:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        package=layout.PACKAGE.pattern(KILN),
        reference=layout.REFERENCE.pattern(KILN),
        stamp=".kiln/stamps/{model}/compile/{component}.json",
        code=COMPILER_CODE,
    output:
        bundle=directory(layout.BUNDLE.pattern(KILN)),
        record=layout.COMPILE_RECORD.pattern(KILN),
    log:
        "logs/{model}/compile/{component}.log",
    benchmark:
        "logs/{model}/compile/{component}.benchmark.tsv"
    threads: stage_threads("compile")
    resources:
        mem_mb=stage_mem_mb("compile"),
        runtime=stage_runtime("compile"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "component_{model}_{component}"
    conda:
        KILN_ENV
    script:
        "../scripts/compile.py"
