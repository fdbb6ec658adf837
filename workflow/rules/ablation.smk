# Ablation studies (params.yaml `ablations:`): Table 1 and Fig. 12 from a per-dimension sweep of
# the classifier-sliced base (no recovery); Tables 5, 6 and Fig. 7 from NuWa derivations with
# changed options (a dimension excluded, fixed-rate ranking, score-based query-key/value, other
# gamma ratios), each fine-tuned and measured on the test split. Identical option sets are one
# run: the full NuWa row of Table 5 is Table 6's "both on" row and Fig. 7's default-ratio cell.
include: "ablation_common.smk"


wildcard_constraints:
    variant="|".join(map(re.escape, A_VARIANTS)),


rule ablations:
    """Tables 1, 5, 6 and Figs. 7, 12 (the ablation studies) and results/PROFILE/ablations.json."""
    input:
        ablation_targets(),
    localrule: True


rule ablation_sweep:
    """Per-dimension sweep of one sub-task: the classifier-sliced base with only one of query-key,
    value, expansion, embedding size pruned at each rate (SVD and score for query-key/value), no
    recovery, test top-1 on the first `eval_limit` test samples of the sub-task (Table 1, Fig. 12)."""
    input:
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        rows=f"{RESULTS}/ablation/sweep/{{base}}/{{subtask}}.parquet",
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=data_spec,
        classes=lambda w: subtask_def(w)["indices"],
        kind=lambda w: subtask_def(w)["kind"],
        options=A_SWEEP_OPTIONS,
        sweep=A_SWEEP,
        seed=A_SEED,
    log:
        f"{LOGS}/ablation/sweep/{{base}}/{{subtask}}.log",
    benchmark:
        f"{BENCH}/ablation/sweep/{{base}}/{{subtask}}.tsv"
    threads: res("ablation_sweep", "threads")
    resources:
        **rule_resources("ablation_sweep"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ablation_sweep.py"


rule ablation_run:
    """One ablation derivation: NuWa with the variant's options at alpha (no recovery), recovery by
    fine-tuning (`ablations.finetune`), test top-1 of both models."""
    input:
        model=model_files(BASE_DIR),
        caches=prepared_files("{base}"),
        data=lambda w: dataset_inputs(dataset_of(w)),
    output:
        pruned=model_files(f"{A_MODEL}/pruned"),
        finetuned=model_files(f"{A_MODEL}/finetuned"),
        json=f"{RESULTS}/ablation/runs/{A_RUN}.json",
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=data_spec,
        classes=lambda w: subtask_def(w)["indices"],
        kind=lambda w: subtask_def(w)["kind"],
        metric=P["metric"],
        options=lambda w: ablation_options(w.variant),
        finetune=A_FINETUNE,
        eval=A_EVAL,
    log:
        f"{LOGS}/ablation/run/{A_RUN}.log",
    benchmark:
        f"{BENCH}/ablation/run/{A_RUN}.tsv"
    threads: res("ablation_run", "threads")
    resources:
        **rule_resources("ablation_run"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ablation_run.py"


rule ablation_tables:
    """Tables 1, 5, 6 and the data of Figs. 7, 12 (csv, md, parquet) and ablations.json, the numbers
    behind the paper's ablation claims (mean over the ablation sub-tasks)."""
    input:
        sweeps=[f"{RESULTS}/ablation/sweep/{A_SWEEP_BASE}/{s}.parquet" for s in A_SUBTASKS],
        runs=[f"{RESULTS}/ablation/runs/{r}.json" for r in ablation_runs()],
    output:
        **{f"{t}_{ext}": (report(f"{TABLES}/{t}.{ext}", caption=f"../report/{t}.rst", category="Tables")
                          if ext == "csv" and t.startswith("table") else f"{TABLES}/{t}.{ext}")
           for t in A_TABLES for ext in ("csv", "md", "parquet")},
        summary=f"{RESULTS}/ablations.json",
    params:
        alpha=float(A_ALPHA),
        gamma_alpha=float(A_GAMMA_ALPHA),
    log:
        f"{LOGS}/ablation/tables.log",
    threads: res("ablation_tables", "threads")
    resources:
        **rule_resources("ablation_tables"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ablation_tables.py"


rule ablation_fig12:
    """Paper Fig. 12: test top-1 vs per-dimension pruning rate for the four adaptive dimensions."""
    input:
        table=f"{TABLES}/fig12_dimension_sweep.parquet",
    output:
        png=report(f"{RESULTS}/figures/fig12_dimension_sweep_{{base}}.png", caption="../report/fig12.rst",
                   category="Figures", labels={"figure": "Fig. 12", "base": "{base}"}),
    params:
        figure="fig12",
    log:
        f"{LOGS}/ablation/fig12_{{base}}.log",
    threads: res("ablation_figures", "threads")
    resources:
        **rule_resources("ablation_figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ablation_figures.py"


rule ablation_fig7:
    """Paper Fig. 7: test top-1 after recovery over gamma_exp x gamma_emb (ratios over gamma_qkv)."""
    input:
        table=f"{TABLES}/fig7_gamma_grid.parquet",
    output:
        png=report(f"{RESULTS}/figures/fig7_gamma_grid_{{base}}.png", caption="../report/fig7.rst",
                   category="Figures", labels={"figure": "Fig. 7", "base": "{base}"}),
    params:
        figure="fig7",
    log:
        f"{LOGS}/ablation/fig7_{{base}}.log",
    threads: res("ablation_figures", "threads")
    resources:
        **rule_resources("ablation_figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/ablation_figures.py"
