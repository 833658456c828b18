# From build to users. Per model:
#   snakemake stage_<model>     publish/<model>/: the model repo folder (consumer file names from the
#                               contract, quantized variants, reports, model card, records, locks)
#   snakemake publish_<model>   uploads it with huggingface_hub (HF_TOKEN; repo from
#                               models.<model>.publish.repo_id); refused without a token or from a
#                               working tree with uncommitted changes
#   snakemake verify_<model>    rebuilds results/<model> from its recorded sources, settings and
#                               toolchain in verify/<model>/ and compares (verify/<model>.json)

for _model in KILN.models:

    rule:
        name:
            f"stage_{_model}"
        input:
            plan.model_targets(KILN, _model),
            # the folder carries the settings and the lock (kiln/): an edit of them alone stages again
            KILN.path,
            "constraints.txt",
        output:
            folder=directory(f"publish/{_model}"),
        params:
            model=derived(_model),
        log:
            f"logs/{_model}/stage.log",
        conda:
            KILN_ENV
        script:
            "../scripts/stage.py"

    rule:
        name:
            f"publish_{_model}"
        input:
            folder=f"publish/{_model}",
        output:
            record=f"publish/{_model}.upload.json",
        params:
            model=derived(_model),
        log:
            f"logs/{_model}/publish.log",
        conda:
            KILN_ENV
        script:
            "../scripts/upload.py"

    rule:
        name:
            f"verify_{_model}"
        input:
            plan.model_targets(KILN, _model),
        output:
            report=f"verify/{_model}.json",
        params:
            model=derived(_model),
            workdir=derived(f"verify/{_model}"),
        log:
            f"logs/{_model}/verify.log",
        threads: 2
        conda:
            KILN_ENV
        script:
            "../scripts/verify.py"
