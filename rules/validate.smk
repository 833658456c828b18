# Validate: stream the reference job's inputs through the Core ML package (kiln's executor in fp32
# and fp16 modes; Apple's runtime per compute unit on macOS) and compare with the source's outputs
# recorded there: parity per output, task metrics and latency, and the fp16 report (the program op by op in
# the executor's fp32 and fp16 plans; an fp16 op that overflows fails the job); then aggregate every component into
# metadata.json with plots. No job here loads the source checkpoint.


rule parity:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        facts=layout.FACTS.pattern(KILN),
        reference=layout.REFERENCE.pattern(KILN),
        package=layout.PACKAGE.pattern(KILN),
        stamp=".kiln/stamps/{model}/parity/{component}.json",
        code=validate_code,
    output:
        record=layout.PARITY_RECORD.pattern(KILN),
        # report(): shown by `snakemake --report report.html`, grouped by model, then component
        parity_plot=report(layout.PARITY_PLOT.pattern(KILN),
                           caption="../report/parity_plot.rst", category="{model}", subcategory="{component}"),
        latency_plot=report(layout.LATENCY_PLOT.pattern(KILN),
                            caption="../report/latency_plot.rst", category="{model}", subcategory="{component}"),
        fp16_plot=report(layout.FP16_PLOT.pattern(KILN),
                         caption="../report/fp16_plot.rst", category="{model}", subcategory="{component}"),
    params:
        plots_dir=at(layout.PLOTS_DIR),
    log:
        "logs/{model}/parity/{component}.log",
    benchmark:
        "logs/{model}/parity/{component}.benchmark.tsv"
    threads: stage_threads("parity")
    resources:
        mem_mb=stage_mem_mb("parity"),
        runtime=stage_runtime("parity"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "component_{model}_{component}"
    conda:
        KILN_ENV
    script:
        "../scripts/parity.py"


rule end_to_end:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        facts=layout.FACTS.pattern(KILN),
        task=layout.TASK_REFERENCE.pattern(KILN),
        task_inputs=layout.TASK_INPUTS.pattern(KILN),
        packages=component_files(layout.PACKAGE),
        code=validate_code,
    output:
        record=layout.END_TO_END.pattern(KILN),
    params:
        packages=component_map(layout.PACKAGE),
        # the family's task plots (e.g. the token / EOU timeline), recorded in end_to_end.json
        plots_dir=at(layout.PLOTS_DIR),
    log:
        "logs/{model}/end_to_end.log",
    benchmark:
        "logs/{model}/end_to_end.benchmark.tsv"
    threads: stage_threads("end_to_end")
    resources:
        mem_mb=stage_mem_mb("end_to_end"),
        runtime=stage_runtime("end_to_end"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "summary_{model}"
    conda:
        KILN_ENV
    script:
        "../scripts/end_to_end.py"


rule metadata:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        source=layout.SOURCE.pattern(KILN),
        prepare_record=layout.PREPARE_RECORD.pattern(KILN),
        torch_latency=layout.TORCH_LATENCY.pattern(KILN),
        exports=component_files(layout.EXPORT_RECORD),
        parities=component_files(layout.PARITY_RECORD),
        compiles=component_files(layout.COMPILE_RECORD),
        end_to_end=layout.END_TO_END.pattern(KILN),
    output:
        metadata=layout.METADATA.pattern(KILN),
        latency_plot=report(layout.LATENCY_OVERVIEW_PLOT.pattern(KILN), caption="../report/latency_overview.rst",
                            category="{model}", subcategory="summary"),
        table=report(layout.PARITY_TABLE.pattern(KILN), caption="../report/parity_table.rst",
                     category="{model}", subcategory="summary"),
    params:
        plots_dir=at(layout.PLOTS_DIR),
    log:
        "logs/{model}/metadata.log",
    threads: stage_threads("metadata")
    resources:
        mem_mb=stage_mem_mb("metadata"),
        runtime=stage_runtime("metadata"),
    group:
        "summary_{model}"
    conda:
        KILN_ENV
    script:
        "../scripts/metadata.py"
