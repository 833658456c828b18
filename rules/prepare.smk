# Load once, reference once. Per model, `prepare_<model>` is the only job that loads the source
# checkpoint: it traces every component (results/<m>/prepared/<c>.pt) and records the family facts
# the later jobs need (facts.json). `reference_<model>` runs the traced programs on the validation
# inputs once (results/<m>/reference/<c>.npz); export, compile, parity, quantize and end_to_end read
# these files and never load the checkpoint again.

for _model, _cfg in KILN.models.items():

    rule:
        name:
            f"prepare_{_model}"
        input:
            source=f"{RESULTS}/{_model}/source.json",
            stamp=f".kiln/stamps/{_model}/prepare.json",
            code=family_code(_model),
        output:
            programs=[str(plan.prepared_program(KILN, _model, c)) for c in _cfg.components],
            facts=str(plan.facts_path(KILN, _model)),
            record=str(plan.prepare_record(KILN, _model)),
        params:
            model=derived(_model),
            programs=derived({c: str(plan.prepared_program(KILN, _model, c)) for c in _cfg.components}),
        log:
            f"logs/{_model}/prepare.log",
        benchmark:
            f"logs/{_model}/prepare.benchmark.tsv"
        threads: 2   # nothing of the model can run before it; torch gets no more than this
        resources:
            mem_mb=KILN_MEM_MB(_model, "prepare"),
            runtime=120,   # minutes, for cluster executors: loading and tracing a full-size checkpoint
        group:
            f"source_{_model}"
        script:
            "../scripts/prepare.py"

    rule:
        name:
            f"reference_{_model}"
        input:
            facts=str(plan.facts_path(KILN, _model)),
            programs=[str(plan.prepared_program(KILN, _model, c)) for c in _cfg.components],
            stamp=f".kiln/stamps/{_model}/prepare.json",
            code=code_stamp("reference", _model),
        output:
            references=[str(plan.reference_path(KILN, _model, c)) for c in _cfg.components],
            task=str(plan.task_reference(KILN, _model)),
            task_inputs=str(plan.task_reference(KILN, _model).with_suffix(".npz")),
            torch_latency=str(plan.torch_latency(KILN, _model)),
        params:
            model=derived(_model),
            programs=derived({c: str(plan.prepared_program(KILN, _model, c)) for c in _cfg.components}),
            references=derived({c: str(plan.reference_path(KILN, _model, c)) for c in _cfg.components}),
        log:
            f"logs/{_model}/reference.log",
        benchmark:
            f"logs/{_model}/reference.benchmark.tsv"
        threads: 2
        resources:
            mem_mb=KILN_MEM_MB(_model, "reference"),
            runtime=120,
        group:
            f"source_{_model}"
        script:
            "../scripts/reference.py"
