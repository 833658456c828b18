# Export: convert one traced component (the prepare job's .pt) to an ML Program and save a
# deterministic .mlpackage (written to a temporary path, then renamed). The strategies that need
# iOS18 share one re-export of the component at iOS18 (export_ios18), made only where configured.


rule export:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        source=layout.SOURCE.pattern(KILN),
        program=layout.PREPARED_PROGRAM.pattern(KILN),
        stamp=".kiln/stamps/{model}/export/{component}.json",
        code=EXPORT_CODE,
    output:
        package=directory(layout.PACKAGE.pattern(KILN)),
        record=layout.EXPORT_RECORD.pattern(KILN),
    log:
        "logs/{model}/export/{component}.log",
    benchmark:
        "logs/{model}/export/{component}.benchmark.tsv"
    threads: stage_threads("export")
    resources:
        mem_mb=stage_mem_mb("export"),
        runtime=stage_runtime("export"),
    group:
        "component_{model}_{component}"
    conda:
        KILN_ENV
    script:
        "../scripts/export.py"


rule export_ios18:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        source=layout.SOURCE.pattern(KILN),
        program=layout.PREPARED_PROGRAM.pattern(KILN),
        stamp=".kiln/stamps/{model}/export_ios18/{component}.json",
        code=EXPORT_CODE,
    output:
        package=directory(layout.IOS18_PACKAGE.pattern(KILN)),
        record=layout.IOS18_RECORD.pattern(KILN),
    params:
        deployment_target=derived("iOS18"),
    log:
        "logs/{model}/export_ios18/{component}.log",
    benchmark:
        "logs/{model}/export_ios18/{component}.benchmark.tsv"
    threads: stage_threads("export")
    resources:
        mem_mb=stage_mem_mb("export"),
        runtime=stage_runtime("export"),
    group:
        "component_{model}_{component}"
    conda:
        KILN_ENV
    script:
        "../scripts/export.py"
