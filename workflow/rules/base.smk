# The base model and what is built once per base: per-layer classifiers, embedding scores, and
# the base's accuracy on every sub-task with the full and the sliced classifier.


rule pretrain:
    """The base ViT: trained here from scratch (offline profiles) or converted from timm weights,
    optionally fine-tuned on the data set's classes (paper profile, CIFAR)."""
    input:
        unpack(base_model_inputs),
    output:
        model_files(BASE_DIR),
    params:
        args=pretrain_args,
    log:
        f"{LOGS}/pretrain/{{base}}.log",
    benchmark:
        f"{BENCH}/pretrain/{{base}}.tsv"
    threads: res("pretrain", "threads")
    resources:
        **rule_resources("pretrain"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule prepare:
    """Per-base caches every sub-task reuses: per-layer (early-exit) classifiers and the Taylor
    scores of the embedding dims on all-class data (`nuwa prepare`)."""
    input:
        model=model_files(BASE_DIR),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        prepared_files("{base}"),
    params:
        runs=lambda w: [["prepare", "--model", BASE_DIR.format(**w), "--data", data_spec(w), "--seed", seed]
                        for seed in P["seeds"]],
        options=PREPARE_OPTIONS,
    log:
        f"{LOGS}/prepare/{{base}}.log",
    benchmark:
        f"{BENCH}/prepare/{{base}}.tsv"
    threads: res("prepare", "threads")
    resources:
        **rule_resources("prepare"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"


rule base_eval:
    """Test top-1 of the base on a sub-task's classes, with its full classifier and with the
    classifier sliced to the sub-task (`nuwa eval --classes`; paper Fig. 4)."""
    input:
        unpack(subtask_files),
        model=model_files(BASE_DIR),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        json=f"{RESULTS}/base_eval/{{base}}/{{subtask}}.json",
    params:
        args=lambda w: ["eval", "--model", BASE_DIR.format(**w), "--data", data_spec(w), "--classes", class_list(w),
                        "--per-image"]  # per-image correctness: the ledger's paired comparisons with the base
        + eval_args(),
    log:
        f"{LOGS}/base_eval/{{base}}/{{subtask}}.log",
    benchmark:
        f"{BENCH}/base_eval/{{base}}/{{subtask}}.tsv"
    threads: res("base_eval", "threads")
    resources:
        **rule_resources("base_eval"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/nuwa_run.py"
