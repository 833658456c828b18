# Consumer contract: each built model against what the runtime that loads it expects
# (contracts/<family>.yaml: file names, feature names, shapes, dtypes, control-token ids). The
# report is results/<model>/contract.json; a mismatch fails the build with a diff.


rule contract:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        contract=lambda wildcards: str(plan.contract_file(KILN, wildcards.model)),
        facts=layout.FACTS.pattern(KILN),
        source=layout.SOURCE.pattern(KILN),
        packages=lambda wildcards: list(plan.contract_artifacts(KILN, wildcards.model)["packages"].values()),
        bundles=lambda wildcards: list(plan.contract_artifacts(KILN, wildcards.model)["bundles"].values()),
        code=lambda wildcards: code_stamp("contract", wildcards.model),
    output:
        report=layout.CONTRACT_REPORT.pattern(KILN),
    params:
        # {component: path} of the inputs of the same names (what the job reads)
        packages=lambda wildcards, output: plan.contract_artifacts(KILN, wildcards.model)["packages"],
        bundles=lambda wildcards, output: plan.contract_artifacts(KILN, wildcards.model)["bundles"],
    log:
        "logs/{model}/contract.log",
    threads: stage_threads("contract")
    resources:
        mem_mb=stage_mem_mb("contract"),
        runtime=stage_runtime("contract"),
    conda:
        KILN_ENV
    script:
        "../scripts/contract.py"
