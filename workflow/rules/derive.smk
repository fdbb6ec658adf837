# Derivation per (base, sub-task, method, alpha, seed): prune (`nuwa derive --recovery none`),
# recover (`nuwa finetune`), measure (`nuwa eval` on both + the derive report). `method` is a
# wildcard: adding a method to params.yaml adds its jobs, nothing else changes.
# Each rule runs one job per SWEEP (base, sub-task, method, seed) that does every alpha, each
# to its own RUN directory (see `sweep` in common.smk).
rule derive:
    """Prune the base for the sub-task to every rate alpha (one-shot + adaptive stages, no recovery)."""
    input:
        unpack(subtask_files),
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        sweep(model_files(f"{DERIVED}/pruned")),
    params:
        runs=lambda w: [derive_args(w, a) for a in ALPHAS],
        options=lambda w: method_options(w.method),
    log:
        f"{LOGS}/derive/{SWEEP}.log",
    benchmark:
        f"{BENCH}/derive/{SWEEP}.tsv"
    threads: res("derive", "threads")
    resources:
        **rule_resources("derive"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule finetune:
    """Recovery: fine-tune the pruned model on the sub-task's fit split (AdamW; paper: 5 epochs,
    lr 1e-4, weight decay 0.05)."""
    input:
        model=sweep(model_files(f"{DERIVED}/pruned")),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        sweep(model_files(f"{DERIVED}/finetuned")),
    params:
        runs=lambda w: [finetune_args(w, a) for a in ALPHAS],
        options=FINETUNE_OPTIONS,
        # Rates the depth stage overshoots give the same pruned model (e.g. every alpha of a
        # simple sub-task): fine-tuning is deterministic, so that model is fine-tuned once.
        reuse_identical=True,
    log:
        f"{LOGS}/finetune/{SWEEP}.log",
    benchmark:
        f"{BENCH}/finetune/{SWEEP}.tsv"
    threads: res("finetune", "threads")
    resources:
        **rule_resources("finetune"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule metrics:
    """Each derivation's metrics: test top-1 before and after fine-tuning (`nuwa eval`), sizes,
    rates and wall-clock seconds per phase from the derive and fine-tune reports."""
    input:
        pruned=sweep(model_files(f"{DERIVED}/pruned")),
        finetuned=sweep(model_files(f"{DERIVED}/finetuned")),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        json=sweep(f"{RESULTS}/metrics/{RUN}.json"),
    params:
        alphas=ALPHAS,
        spec=data_spec,
        subtask_kind=lambda w: subtask_def(w)["kind"],
        eval=P["eval"],
    log:
        f"{LOGS}/metrics/{SWEEP}.log",
    benchmark:
        f"{BENCH}/metrics/{SWEEP}.tsv"
    threads: res("metrics", "threads")
    resources:
        **rule_resources("metrics"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/metrics.py"
