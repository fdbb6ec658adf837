# Tables and figures: every one is a target and goes into `snakemake --report` with a caption
# (workflow/report/*.rst) saying what it reproduces.


rule table3:
    """Paper Table 3 in miniature: by method (mean top-1 per sub-task kind and alpha on the
    sub-tasks every method ran on), long (one row per derivation plus the base rows with full and
    sliced classifier), the derivation cost per method; and the headline numbers for `dvc metrics`."""
    input:
        metrics=[f"{RESULTS}/metrics/{r}.json" for r in runs()],
        base=[f"{RESULTS}/base_eval/{b}/{s}.json" for b, s in subtask_pairs()],
    output:
        csv=report(f"{RESULTS}/tables/table3.csv", caption="../report/table3.rst", category="Tables"),
        md=f"{RESULTS}/tables/table3.md",
        parquet=f"{RESULTS}/tables/table3.parquet",
        long_csv=report(f"{RESULTS}/tables/table3_long.csv", caption="../report/table3_long.rst", category="Tables"),
        long_md=f"{RESULTS}/tables/table3_long.md",
        long_parquet=f"{RESULTS}/tables/table3_long.parquet",
        cost_csv=report(f"{RESULTS}/tables/derivation_cost.csv", caption="../report/derivation_cost.rst",
                        category="Tables"),
        cost_md=f"{RESULTS}/tables/derivation_cost.md",
        cost_parquet=f"{RESULTS}/tables/derivation_cost.parquet",
        summary=f"{RESULTS}/metrics.json",
    params:
        pairs=[dict(base=b, subtask=s, kind=SUBTASKS[BASES[b]["dataset"]][s]["kind"]) for b, s in subtask_pairs()],
    log:
        f"{LOGS}/table3.log",
    benchmark:
        f"{BENCH}/table3.tsv"
    threads: res("table3", "threads")
    resources:
        **rule_resources("table3"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/table3.py"


rule fig6_accuracy_vs_alpha:
    """Paper Fig. 6 in miniature: test top-1 after fine-tuning vs alpha, one line per sub-task,
    the base with its sliced classifier dashed."""
    input:
        metrics=lambda w: [f"{RESULTS}/metrics/{r}.json" for r in runs(w.base)],
        base=lambda w: [f"{RESULTS}/base_eval/{b}/{s}.json" for b, s in subtask_pairs(w.base)],
    output:
        report(f"{RESULTS}/figures/fig6_accuracy_vs_alpha_{{base}}.png", caption="../report/fig6.rst",
               category="Figures", labels={"figure": "Fig. 6", "base": "{base}"}),
    log:
        f"{LOGS}/figures/fig6_{{base}}.log",
    benchmark:
        f"{BENCH}/figures/fig6_{{base}}.tsv"
    threads: res("figures", "threads")
    resources:
        **rule_resources("figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/figures.py"


rule fig4_sliced_vs_full:
    """Paper Fig. 4: the base's test top-1 per sub-task with the full vs the sliced classifier."""
    input:
        base=lambda w: [f"{RESULTS}/base_eval/{b}/{s}.json" for b, s in subtask_pairs(w.base)],
    output:
        report(f"{RESULTS}/figures/fig4_sliced_vs_full_{{base}}.png", caption="../report/fig4.rst",
               category="Figures", labels={"figure": "Fig. 4", "base": "{base}"}),
    log:
        f"{LOGS}/figures/fig4_{{base}}.log",
    benchmark:
        f"{BENCH}/figures/fig4_{{base}}.tsv"
    threads: res("figures", "threads")
    resources:
        **rule_resources("figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/figures.py"


rule fig5_importance_similarity:
    """Paper Fig. 5: cosine similarity of the importance vectors of heads, MLP neurons and
    embedding dims across sub-tasks."""
    input:
        scores=lambda w: [f"{RESULTS}/importance/{b}/{s}.parquet" for b, s in subtask_pairs(w.base)],
    output:
        report(f"{RESULTS}/figures/fig5_importance_similarity_{{base}}.png", caption="../report/fig5.rst",
               category="Figures", labels={"figure": "Fig. 5", "base": "{base}"}),
    params:
        subtasks=lambda w: BASES[w.base]["subtasks"],
    log:
        f"{LOGS}/figures/fig5_{{base}}.log",
    benchmark:
        f"{BENCH}/figures/fig5_{{base}}.tsv"
    threads: res("figures", "threads")
    resources:
        **rule_resources("figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/figures.py"


rule claims:
    """The claims ledger: one line per claim of the paper, what this profile measured, and its
    verdict by a seed-by-image interval (results/PROFILE/claims.md, and claims.csv)."""
    input:
        unpack(claims_inputs),
    output:
        md=report(f"{RESULTS}/claims.md", caption="../report/claims.rst", category="Tables"),
        csv=f"{RESULTS}/claims.csv",
    params:
        profile=PROFILE,
    log:
        f"{LOGS}/claims.log",
    threads: res("figures", "threads")
    resources:
        **rule_resources("figures"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/claims.py"
