# Quantize: every configured strategy for every component, compiled and scored against the float
# Core ML baseline on the reference job's validation inputs (strategies that need iOS18 compress
# the component's shared iOS18 re-export); then one summary per model with plots. A strategy that
# cannot apply (no weight above the threshold) is recorded as a named skip, not a hole.


rule quantize:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        facts=layout.FACTS.pattern(KILN),
        reference=layout.REFERENCE.pattern(KILN),
        package=layout.PACKAGE.pattern(KILN),
        # the traced program: torch runs it with the variant's dequantized weights (kiln.quantize.dequantized)
        program=layout.PREPARED_PROGRAM.pattern(KILN),
        base=known_signature(lambda wildcards: str(plan.quantize_base(KILN, wildcards.model, wildcards.strategy,
                                                                      wildcards.component))),
        stamp=".kiln/stamps/{model}/quantize/{strategy}/{component}.json",
        code=quantize_code,
    output:
        # the variant's .mlpackage/.mlmodelc are written beside the record, atomically, unless skipped
        record=layout.QUANTIZE_RECORD.pattern(KILN),
    params:
        out_dir=at(layout.QUANTIZED_DIR),
    log:
        "logs/{model}/quantize/{strategy}/{component}.log",
    benchmark:
        "logs/{model}/quantize/{strategy}/{component}.benchmark.tsv"
    threads: stage_threads("quantize")
    resources:
        mem_mb=stage_mem_mb("quantize"),
        runtime=stage_runtime("quantize"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "component_{model}_{component}"
    conda:
        KILN_ENV
    script:
        "../scripts/quantize.py"


rule quantization_summary:
    input:
        contracts=layout.CONTRACTS.pattern(KILN),   # the shapes (kiln.workflow.entry binds them)
        records=lambda wildcards: [str(layout.QUANTIZE_RECORD.path(KILN, model=wildcards.model, strategy=s,
                                                                   component=c))
                                   for s, c in plan.quantize_jobs(KILN, wildcards.model)],
        # the family's task with each quantized component swapped in (e.g. EOU timing per strategy)
        facts=layout.FACTS.pattern(KILN),
        task=layout.TASK_REFERENCE.pattern(KILN),
        task_inputs=layout.TASK_INPUTS.pattern(KILN),
        packages=component_files(layout.PACKAGE),
        code=quantization_summary_code,
    output:
        summary=layout.QUANTIZATION_SUMMARY.pattern(KILN),
        strategies_plot=report(layout.QUANTIZATION_STRATEGIES_PLOT.pattern(KILN),
                               caption="../report/quantization_strategies.rst", category="{model}",
                               subcategory="quantization"),
        table=report(layout.QUANTIZATION_TABLE.pattern(KILN), caption="../report/quantization_table.rst",
                     category="{model}", subcategory="quantization"),
    params:
        packages=component_map(layout.PACKAGE),
    log:
        "logs/{model}/quantization_summary.log",
    benchmark:
        "logs/{model}/quantization_summary.benchmark.tsv"
    threads: stage_threads("quantization_summary")
    resources:
        mem_mb=stage_mem_mb("quantization_summary"),
        runtime=stage_runtime("quantization_summary"),
    group:
        "summary_{model}"
    conda:
        KILN_ENV
    script:
        "../scripts/quantization_summary.py"


rule quantization_plot:
    input:
        summary=layout.QUANTIZATION_SUMMARY.pattern(KILN),
    output:
        plot=report(layout.QUANTIZATION_PLOT.pattern(KILN),
                    caption="../report/quantization_plot.rst", category="{model}", subcategory="quantization"),
    log:
        "logs/{model}/quantization_plot/{component}.log",
    threads: stage_threads("quantization_plot")
    resources:
        mem_mb=stage_mem_mb("quantization_plot"),
        runtime=stage_runtime("quantization_plot"),
    group:
        "summary_{model}"
    conda:
        KILN_ENV
    script:
        "../scripts/quantization_plot.py"
