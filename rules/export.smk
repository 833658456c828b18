# Export: wrap one component in a traceable module, trace it with its fixed input contract, convert
# it to an ML Program and save a deterministic .mlpackage (written to a temporary path, then renamed).


rule export:
    input:
        source=f"{RESULTS}/{{model}}/source.json",
        stamp=".kiln/stamps/{model}/export/{component}.json",
        code=family_code,
    output:
        package=directory(f"{RESULTS}/{{model}}/{{component}}.mlpackage"),
        record=f"{RESULTS}/{{model}}/export/{{component}}.json",
    log:
        "logs/{model}/export/{component}.log",
    benchmark:
        "logs/{model}/export/{component}.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "export"),
    script:
        "../scripts/export.py"
