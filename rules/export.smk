# Export: convert one traced component (the prepare job's .pt) to an ML Program and save a
# deterministic .mlpackage (written to a temporary path, then renamed). The strategies that need
# iOS18 share one re-export of the component at iOS18 (export_ios18), made only where configured.


rule export:
    input:
        source=f"{RESULTS}/{{model}}/source.json",
        program=f"{RESULTS}/{{model}}/prepared/{{component}}.pt",
        stamp=".kiln/stamps/{model}/export/{component}.json",
        code=EXPORT_CODE,
    output:
        package=directory(f"{RESULTS}/{{model}}/{{component}}.mlpackage"),
        record=f"{RESULTS}/{{model}}/export/{{component}}.json",
    log:
        "logs/{model}/export/{component}.log",
    benchmark:
        "logs/{model}/export/{component}.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "export"),
    group:
        "component_{model}_{component}"
    script:
        "../scripts/export.py"


rule export_ios18:
    input:
        source=f"{RESULTS}/{{model}}/source.json",
        program=f"{RESULTS}/{{model}}/prepared/{{component}}.pt",
        stamp=".kiln/stamps/{model}/export_ios18/{component}.json",
        code=EXPORT_CODE,
    output:
        package=directory(f"{RESULTS}/{{model}}/ios18/{{component}}.mlpackage"),
        record=f"{RESULTS}/{{model}}/ios18/{{component}}.json",
    params:
        deployment_target=derived("iOS18"),
    log:
        "logs/{model}/export_ios18/{component}.log",
    benchmark:
        "logs/{model}/export_ios18/{component}.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "export"),
    group:
        "component_{model}_{component}"
    script:
        "../scripts/export.py"
