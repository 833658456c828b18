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
            source=layout.SOURCE.pattern(KILN, model=_model),
            stamp=f".kiln/stamps/{_model}/prepare.json",
            code=family_code(_model),
        output:
            programs=[layout.PREPARED_PROGRAM.pattern(KILN, model=_model, component=c) for c in _cfg.components],
            facts=layout.FACTS.pattern(KILN, model=_model),
            contracts=layout.CONTRACTS.pattern(KILN, model=_model),
            record=layout.PREPARE_RECORD.pattern(KILN, model=_model),
        params:
            model=derived(_model),
            programs=derived({c: str(layout.PREPARED_PROGRAM.path(KILN, model=_model, component=c))
                              for c in _cfg.components}),
        log:
            f"logs/{_model}/prepare.log",
        benchmark:
            f"logs/{_model}/prepare.benchmark.tsv"
        threads: stage_threads("prepare", _model)   # nothing of the model can run before it; torch gets no more
        resources:
            mem_mb=stage_mem_mb("prepare", _model),
            runtime=stage_runtime("prepare", _model),   # minutes, for cluster executors
        group:
            f"source_{_model}"
        conda:
            KILN_ENV
        script:
            "../scripts/prepare.py"

    rule:
        name:
            f"reference_{_model}"
        input:
            facts=layout.FACTS.pattern(KILN, model=_model),
            contracts=layout.CONTRACTS.pattern(KILN, model=_model),   # the shapes (kiln.workflow.entry binds them)
            programs=[layout.PREPARED_PROGRAM.pattern(KILN, model=_model, component=c) for c in _cfg.components],
            stamp=f".kiln/stamps/{_model}/prepare.json",
            code=code_stamp("reference", _model),
        output:
            references=[layout.REFERENCE.pattern(KILN, model=_model, component=c) for c in _cfg.components],
            task=layout.TASK_REFERENCE.pattern(KILN, model=_model),
            task_inputs=layout.TASK_INPUTS.pattern(KILN, model=_model),
            torch_latency=layout.TORCH_LATENCY.pattern(KILN, model=_model),
        params:
            model=derived(_model),
            programs=derived({c: str(layout.PREPARED_PROGRAM.path(KILN, model=_model, component=c))
                              for c in _cfg.components}),
            references=derived({c: str(layout.REFERENCE.path(KILN, model=_model, component=c))
                                for c in _cfg.components}),
        log:
            f"logs/{_model}/reference.log",
        benchmark:
            f"logs/{_model}/reference.benchmark.tsv"
        threads: stage_threads("reference", _model)
        resources:
            mem_mb=stage_mem_mb("reference", _model),
            runtime=stage_runtime("reference", _model),
        group:
            f"source_{_model}"
        conda:
            KILN_ENV
        script:
            "../scripts/reference.py"
