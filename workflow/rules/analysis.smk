# Per-sub-task analyses of the base: Taylor importance of heads, neurons and embedding dims
# (paper Eq. 3-4, Fig. 5) and the SVD spectra of the attention products (Eq. 5, App. A.3).


rule importance:
    """Taylor importance per sub-task on the classifier-sliced, depth-pruned base (what NuWa ranks
    heads and neurons by) and on the classifier-sliced full-depth base (comparable across
    sub-tasks, for Fig. 5); also the one-shot decisions (depth, heads kept) for `spectra`."""
    input:
        unpack(subtask_files),
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        scores=f"{RESULTS}/importance/{{base}}/{{subtask}}.parquet",
        oneshot=f"{RESULTS}/importance/{{base}}/{{subtask}}.oneshot.json",
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=data_spec,
        classes=lambda w: subtask_def(w)["indices"],
        options=IMPORTANCE_OPTIONS,
        seed=P["seeds"][0],
    log:
        f"{LOGS}/importance/{{base}}/{{subtask}}.log",
    benchmark:
        f"{BENCH}/importance/{{base}}/{{subtask}}.tsv"
    threads: res("importance", "threads")
    resources:
        **rule_resources("importance"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/importance.py"


rule spectra:
    """Singular values of W_Q~^T W_K~ and W_V~^T W_O^T per head (biases as an extra column) of the
    one-shot-pruned model, from `nuwa.svd.reparametrize`, with each direction's energy share."""
    input:
        oneshot=f"{RESULTS}/importance/{{base}}/{{subtask}}.oneshot.json",
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
    output:
        spectra=f"{RESULTS}/spectra/{{base}}/{{subtask}}.parquet",
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        classes=lambda w: subtask_def(w)["indices"],
        svd=DERIVE.get("svd", "product"),
    log:
        f"{LOGS}/spectra/{{base}}/{{subtask}}.log",
    benchmark:
        f"{BENCH}/spectra/{{base}}/{{subtask}}.tsv"
    threads: res("spectra", "threads")
    resources:
        **rule_resources("spectra"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/spectra.py"
