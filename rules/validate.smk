# Validate: stream the reference job's inputs through the Core ML package (kiln's executor in fp32
# and fp16 modes; Apple's runtime per compute unit on macOS) and compare with the source's outputs
# recorded there: parity per output, task metrics and latency, and the fp16 report (the program op by op in
# the executor's fp32 and fp16 plans; an fp16 op that overflows fails the job); then aggregate every component into
# metadata.json with plots. No job here loads the source checkpoint.


rule parity:
    input:
        facts=f"{RESULTS}/{{model}}/prepared/facts.json",
        reference=f"{RESULTS}/{{model}}/reference/{{component}}.npz",
        package=f"{RESULTS}/{{model}}/{{component}}.mlpackage",
        stamp=".kiln/stamps/{model}/parity/{component}.json",
        code=validate_code,
    output:
        record=f"{RESULTS}/{{model}}/parity/{{component}}.json",
        # report(): shown by `snakemake --report report.html`, grouped by model, then component
        parity_plot=report(f"{RESULTS}/{{model}}/plots/{{component}}_parity.png",
                           caption="../report/parity_plot.rst", category="{model}", subcategory="{component}"),
        latency_plot=report(f"{RESULTS}/{{model}}/plots/{{component}}_latency.png",
                            caption="../report/latency_plot.rst", category="{model}", subcategory="{component}"),
        fp16_plot=report(f"{RESULTS}/{{model}}/plots/{{component}}_fp16.png",
                         caption="../report/fp16_plot.rst", category="{model}", subcategory="{component}"),
    params:
        plots_dir=lambda wildcards, output: f"{RESULTS}/{wildcards.model}/plots",
    log:
        "logs/{model}/parity/{component}.log",
    benchmark:
        "logs/{model}/parity/{component}.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "validate"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "component_{model}_{component}"
    script:
        "../scripts/parity.py"


rule end_to_end:
    input:
        facts=f"{RESULTS}/{{model}}/prepared/facts.json",
        task=f"{RESULTS}/{{model}}/reference/task.json",
        task_inputs=f"{RESULTS}/{{model}}/reference/task.npz",
        packages=lambda wildcards: [str(plan.package_path(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components],
        code=validate_code,
    output:
        record=f"{RESULTS}/{{model}}/end_to_end.json",
    params:
        packages=lambda wildcards, output: {c: str(plan.package_path(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components},
        # the family's task plots (e.g. the token / EOU timeline), recorded in end_to_end.json
        plots_dir=lambda wildcards, output: f"{RESULTS}/{wildcards.model}/plots",
    log:
        "logs/{model}/end_to_end.log",
    benchmark:
        "logs/{model}/end_to_end.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "validate"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "summary_{model}"
    script:
        "../scripts/end_to_end.py"


rule metadata:
    input:
        source=f"{RESULTS}/{{model}}/source.json",
        prepare_record=f"{RESULTS}/{{model}}/prepared/prepare.json",
        torch_latency=f"{RESULTS}/{{model}}/reference/torch_latency.json",
        exports=lambda wildcards: [str(plan.export_record(KILN, wildcards.model, c))
                                   for c in KILN.models[wildcards.model].components],
        parities=lambda wildcards: [str(plan.parity_record(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components],
        compiles=lambda wildcards: [str(plan.compile_record(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components],
        end_to_end=f"{RESULTS}/{{model}}/end_to_end.json",
    output:
        metadata=f"{RESULTS}/{{model}}/metadata.json",
        latency_plot=report(f"{RESULTS}/{{model}}/plots/latency.png", caption="../report/latency_overview.rst",
                            category="{model}", subcategory="summary"),
        table=report(f"{RESULTS}/{{model}}/tables/parity.html", caption="../report/parity_table.rst",
                     category="{model}", subcategory="summary"),
    params:
        plots_dir=lambda wildcards, output: f"{RESULTS}/{wildcards.model}/plots",
    log:
        "logs/{model}/metadata.log",
    resources:
        mem_mb=1000,
    group:
        "summary_{model}"
    script:
        "../scripts/metadata.py"
