# Derivation per (base, sub-task, method, alpha, seed): prune (`nuwa derive --recovery none`),
# recover (`nuwa finetune`), measure (`nuwa eval` on both + the derive report). `method` is a
# wildcard: adding a method to params.yaml adds its jobs, nothing else changes.
DERIVED = f"{MODELS}/derived/{RUN}"


rule derive:
    """Prune the base for the sub-task to the rate alpha (one-shot + adaptive stages, no recovery)."""
    input:
        unpack(subtask_files),
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        model_files(f"{DERIVED}/pruned"),
    params:
        args=lambda w: ["derive", "--model", BASE_DIR.format(**w), "--data", data_spec(w), "--classes", class_list(w),
                        "--rate", w.alpha, "--metric", P["metric"], "--method", w.method, "--recovery", "none",
                        "--seed", w.seed, "--out", f"{DERIVED}/pruned".format(**w)],
        options=DERIVE_OPTIONS,
    log:
        f"{LOGS}/derive/{RUN}.log",
    benchmark:
        f"{BENCH}/derive/{RUN}.tsv"
    threads: res("derive", "threads")
    resources:
        mem_mb=res("derive", "mem_mb"),
        runtime=res("derive", "runtime"),
        gpu=res("derive", "gpu"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule finetune:
    """Recovery: fine-tune the pruned model on the sub-task's fit split (AdamW; paper: 5 epochs,
    lr 1e-4, weight decay 0.05)."""
    input:
        model=model_files(f"{DERIVED}/pruned"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        model_files(f"{DERIVED}/finetuned"),
    params:
        args=lambda w: ["finetune", "--model", f"{DERIVED}/pruned".format(**w), "--data", data_spec(w),
                        "--epochs", str(P["finetune"]["epochs"]), "--seed", w.seed,
                        *(["--limit", str(P["finetune"]["limit"])] if "limit" in P["finetune"] else []),
                        "--out", f"{DERIVED}/finetuned".format(**w)],
        options=FINETUNE_OPTIONS,
    log:
        f"{LOGS}/finetune/{RUN}.log",
    benchmark:
        f"{BENCH}/finetune/{RUN}.tsv"
    threads: res("finetune", "threads")
    resources:
        mem_mb=res("finetune", "mem_mb"),
        runtime=res("finetune", "runtime"),
        gpu=res("finetune", "gpu"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule metrics:
    """One derivation's metrics: test top-1 before and after fine-tuning (`nuwa eval`), sizes,
    rates and wall-clock seconds per phase from the derive and fine-tune reports."""
    input:
        pruned=model_files(f"{DERIVED}/pruned"),
        finetuned=model_files(f"{DERIVED}/finetuned"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        json=f"{RESULTS}/metrics/{RUN}.json",
    params:
        spec=data_spec,
        subtask_kind=lambda w: subtask_def(w)["kind"],
        eval=P["eval"],
    log:
        f"{LOGS}/metrics/{RUN}.log",
    benchmark:
        f"{BENCH}/metrics/{RUN}.tsv"
    threads: res("metrics", "threads")
    resources:
        mem_mb=res("metrics", "mem_mb"),
        runtime=res("metrics", "runtime"),
        gpu=res("metrics", "gpu"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/metrics.py"
