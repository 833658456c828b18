# Quantize: every configured strategy for every component, compiled and scored against the float
# Core ML baseline on the reference job's validation inputs (strategies that need iOS18 compress
# the component's shared iOS18 re-export); then one summary per model with plots. A strategy that
# cannot apply (no weight above the threshold) is recorded as a named skip, not a hole.


rule quantize:
    input:
        facts=f"{RESULTS}/{{model}}/prepared/facts.json",
        reference=f"{RESULTS}/{{model}}/reference/{{component}}.npz",
        package=f"{RESULTS}/{{model}}/{{component}}.mlpackage",
        # the traced program: torch runs it with the variant's dequantized weights (kiln.quantize.dequantized)
        program=f"{RESULTS}/{{model}}/prepared/{{component}}.pt",
        base=lambda wildcards: str(plan.quantize_base(KILN, wildcards.model, wildcards.strategy,
                                                      wildcards.component)),
        stamp=".kiln/stamps/{model}/quantize/{strategy}/{component}.json",
        code=quantize_code,
    output:
        # the variant's .mlpackage/.mlmodelc are written beside the record, atomically, unless skipped
        record=f"{RESULTS}/{{model}}/quantized/{{strategy}}/{{component}}.json",
    params:
        out_dir=lambda wildcards, output: f"{RESULTS}/{wildcards.model}/quantized/{wildcards.strategy}",
    log:
        "logs/{model}/quantize/{strategy}/{component}.log",
    benchmark:
        "logs/{model}/quantize/{strategy}/{component}.benchmark.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "quantize"),
        apple_runtime=1,   # uses Apple's compiler/runtime where the host has them (macOS); see profiles/slurm
    group:
        "component_{model}_{component}"
    script:
        "../scripts/quantize.py"


rule quantization_summary:
    input:
        records=lambda wildcards: [str(plan.quantize_record(KILN, wildcards.model, s, c))
                                   for s, c in plan.quantize_jobs(KILN, wildcards.model)],
        # the family's task with each quantized component swapped in (e.g. EOU timing per strategy)
        facts=f"{RESULTS}/{{model}}/prepared/facts.json",
        task=f"{RESULTS}/{{model}}/reference/task.json",
        task_inputs=f"{RESULTS}/{{model}}/reference/task.npz",
        packages=lambda wildcards: [str(plan.package_path(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components],
        code=quantization_summary_code,
    output:
        summary=f"{RESULTS}/{{model}}/quantization_summary.json",
        strategies_plot=report(f"{RESULTS}/{{model}}/plots/quantization/strategies.png",
                               caption="../report/quantization_strategies.rst", category="{model}",
                               subcategory="quantization"),
        table=report(f"{RESULTS}/{{model}}/tables/quantization.html", caption="../report/quantization_table.rst",
                     category="{model}", subcategory="quantization"),
    params:
        packages=lambda wildcards, output: {c: str(plan.package_path(KILN, wildcards.model, c))
                                    for c in KILN.models[wildcards.model].components},
    log:
        "logs/{model}/quantization_summary.log",
    benchmark:
        "logs/{model}/quantization_summary.benchmark.tsv"
    resources:
        mem_mb=lambda wildcards: KILN_MEM_MB(wildcards.model, "validate"),
    group:
        "summary_{model}"
    script:
        "../scripts/quantization_summary.py"


rule quantization_plot:
    input:
        summary=f"{RESULTS}/{{model}}/quantization_summary.json",
    output:
        plot=report(f"{RESULTS}/{{model}}/plots/quantization/size_vs_quality_{{component}}.png",
                    caption="../report/quantization_plot.rst", category="{model}", subcategory="quantization"),
    log:
        "logs/{model}/quantization_plot/{component}.log",
    resources:
        mem_mb=1000,
    group:
        "summary_{model}"
    script:
        "../scripts/quantization_plot.py"
