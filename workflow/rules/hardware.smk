# Hardware benchmarks (paper Table 4): the base and its NuWa edge ViTs timed per runtime
# and batch size (params.yaml `bench:`). One job per base times all its models in one process and
# holds every core (threads: workflow.cores), so no other job runs beside it and disturbs the clock.


include: "hardware_common.smk"


rule hardware:
    """The hardware benchmarks of the active profile: the timings behind Table 4."""
    input:
        bench_targets(),
    localrule: True


rule hw_bench:
    """Latency (median, p90), throughput, weight bytes and peak memory of the base and its NuWa edge
    ViTs, per runtime (torch eager, ONNX Runtime, torch.compile) and batch size."""
    input:
        lambda w: [f for _, d in bench_models(w.base) for f in model_files(d)],
    output:
        f"{RESULTS}/bench/{{base}}.parquet",
    params:
        models=lambda w: bench_models(w.base),
        bench=BENCH_TIMING,
    log:
        f"{LOGS}/bench/{{base}}.log",
    benchmark:
        f"{BENCH}/bench/{{base}}.tsv"
    threads: workflow.cores
    resources:
        **rule_resources("hw_bench"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/hw_bench.py"


rule pareto_latency:
    """Batch-1 latency (torch, every core) of every method's edge ViTs of the benchmarked sub-tasks,
    for the Pareto figure: depth pruning's advantage is latency, which FLOPs do not show."""
    input:
        lambda w: [f for _, d in pareto_models(w.base) for f in model_files(d)],
    output:
        f"{RESULTS}/bench/pareto_{{base}}.parquet",
    params:
        models=lambda w: pareto_models(w.base),
        bench=dict(BENCH_TIMING, batch_sizes=[1], runtimes=["torch"]),
    log:
        f"{LOGS}/bench/pareto_{{base}}.log",
    benchmark:
        f"{BENCH}/bench/pareto_{{base}}.tsv"
    threads: workflow.cores
    resources:
        **rule_resources("hw_bench"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/hw_bench.py"


rule pareto_figure:
    """Per sub-task: test top-1 against achieved FLOPs and against measured batch-1 latency, for
    every method (the base as the reference point)."""
    input:
        bench=f"{RESULTS}/bench/pareto_{{base}}.parquet",
        table3=f"{TABLES}/table3_long.parquet",
    output:
        report(f"{RESULTS}/figures/fig_pareto_{{base}}.png", caption="../report/fig_pareto.rst", category="Figures",
               labels={"figure": "Pareto: top-1 vs cost", "base": "{base}"}),
    log:
        f"{LOGS}/pareto_figure_{{base}}.log",
    benchmark:
        f"{BENCH}/pareto_figure_{{base}}.tsv"
    threads: res("table4", "threads")
    resources:
        **rule_resources("table4"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/pareto_figure.py"


rule table4:
    """Paper Table 4 in miniature: latency and speedup of the NuWa edge ViTs over their base per
    runtime, batch size and alpha, against the FLOPs bound, with their top-1 gain over the base;
    and one figure per base of measured speedup vs FLOPs ratio."""
    input:
        bench=[f"{RESULTS}/bench/{b}.parquet" for b in BENCH_BASES],
        table3=f"{TABLES}/table3_long.parquet",
    output:
        **table_outputs("table4", caption="../report/table4.rst"),
        figures=[report(f"{RESULTS}/figures/fig_speedup_vs_flops_{b}.png", caption="../report/fig_speedup.rst",
                        category="Figures", labels={"figure": "speedup vs FLOPs", "base": b}) for b in BENCH_BASES],
    params:
        bases=BENCH_BASES,
    log:
        f"{LOGS}/table4.log",
    benchmark:
        f"{BENCH}/table4.tsv"
    threads: res("table4", "threads")
    resources:
        **rule_resources("table4"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/table4.py"


# ---- paper-shaped speed check (not part of `all`: ~8 min on 2 cores) --------------------------
# Random DeiT-Small/Base shapes at 224x224, NuWa-derived without training, timed against their
# base: the speedups of the architecture surgery at the paper's sizes. Profile-independent;
# results in results/speed/ (committed). `snakemake --profile workflow/profiles/default speed_paper_shapes`
rule speed_paper_shapes:
    """Speedup of NuWa edge ViTs of DeiT-Small/Base shapes (random weights, recovery none) over
    their base at every alpha, per runtime and batch size, against the FLOPs bound."""
    output:
        csv="results/speed/paper_shapes.csv",
        md="results/speed/paper_shapes.md",
        parquet="results/speed/paper_shapes.parquet",
        rows="results/speed/paper_shapes_rows.parquet",
        figure="results/speed/fig_speedup_paper_shapes.png",
    params:
        check=SPEED,
    log:
        "logs/speed/paper_shapes.log",
    benchmark:
        "benchmarks/speed/paper_shapes.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/speed_paper_shapes.py"


# ---- hardware-friendly sizes and latency budgets (default profile: `bench.rounding`, `bench.latency`) --
rule rounding:
    """Sizes rounded to a multiple of 1 (exact), 8, 16, 32: NuWa at one alpha without recovery,
    test top-1 and latency per runtime and batch size (to pick the rounding default)."""
    input:
        unpack(bench_check_inputs),
    output:
        rows=f"{RESULTS}/bench/rounding_{{base}}.parquet",
        **table_outputs("rounding_{base}", caption="../report/rounding.rst"),
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=lambda w: DATASETS[BASES[w.base]["dataset"]]["spec"],
        subtask=lambda w: bench_subtask_def(w.base, "rounding")[0],
        classes=lambda w: bench_subtask_def(w.base, "rounding")[1]["indices"],
        check=lambda w: P["bench"]["rounding"],
        bench=BENCH_TIMING,
        options=DERIVE_OPTIONS,
        metric=P["metric"],
        eval=P["eval"],
    log:
        f"{LOGS}/bench/rounding_{{base}}.log",
    benchmark:
        f"{BENCH}/bench/rounding_{{base}}.tsv"
    threads: workflow.cores
    resources:
        **rule_resources("hw_bench"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/hw_rounding.py"


rule latency_budget:
    """`nuwa derive --latency-ms` at fractions of the base's latency, each result timed again by
    `nuwa bench` in a fresh process: does it meet its budget?"""
    input:
        unpack(bench_check_inputs),
    output:
        **table_outputs("latency_budget_{base}", caption="../report/latency_budget.rst"),
    params:
        base_dir=lambda w: BASE_DIR.format(**w),
        spec=lambda w: DATASETS[BASES[w.base]["dataset"]]["spec"],
        subtask=lambda w: bench_subtask_def(w.base, "latency")[0],
        classes=lambda w: bench_subtask_def(w.base, "latency")[1]["indices"],
        check=lambda w: P["bench"]["latency"],
        options=DERIVE_OPTIONS,
    log:
        f"{LOGS}/bench/latency_budget_{{base}}.log",
    benchmark:
        f"{BENCH}/bench/latency_budget_{{base}}.tsv"
    threads: workflow.cores
    resources:
        **rule_resources("hw_bench"),
    conda:
        "../envs/nuwa.yaml"
    script:
        "../scripts/hw_latency_budget.py"
