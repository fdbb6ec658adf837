# Helpers of workflow/rules/hardware.smk (the hardware benchmarks): which models each timing job
# reads, the targets, and the timing parameters every timing rule shares.


def bench_subtasks(base):
    wanted = P["bench"].get("subtasks")
    return [s for s in BASES[base]["subtasks"] if wanted is None or s in wanted]


def bench_models(base):
    """(labels, model directory) of what one hw_bench job times: the base, then the fine-tuned NuWa
    edge ViT of every benchmarked sub-task and alpha (first seed; latency does not depend on it)."""
    seed = P["seeds"][0]
    edges = [(dict(base=base, subtask=s, alpha=float(a)),
              f"{MODELS}/derived/{RUN}/finetuned".format(base=base, subtask=s, method="nuwa", alpha=a, seed=seed))
             for s in bench_subtasks(base) for a in ALPHAS]
    return [(dict(base=base, subtask=None, alpha=None), BASE_DIR.format(base=base))] + edges


def pareto_models(base):
    """(labels, model directory) of the Pareto timings: the base, then every method's fine-tuned
    edge ViT of every benchmarked sub-task and alpha (first seed)."""
    seed = P["seeds"][0]
    wanted = set(bench_subtasks(base))
    edges = []
    for run in runs(base):
        _, subtask, method, tail = run.split("/")
        alpha, run_seed = tail[1:].split("-s")
        if subtask in wanted and run_seed == str(seed):
            edges.append((dict(base=base, subtask=subtask, method=method, alpha=float(alpha)),
                          f"{MODELS}/derived/{run}/finetuned"))
    return [(dict(base=base, subtask=None, method=None, alpha=None), BASE_DIR.format(base=base))] + edges


# How to time (runtimes, batch sizes, repeats, device): what every timing rule reads; the checks'
# own sections are theirs, so changing one reruns only its rule.
BENCH_TIMING = {k: v for k, v in P["bench"].items() if k not in ("bases", "subtasks", "rounding", "latency")}
BENCH_BASES = [b for b in BASES if b in P["bench"].get("bases", BASES)] if "nuwa" in P["methods"] else []


def bench_targets():
    """The timings (the DVC stage `hardware`), with the rounding and latency-budget checks."""
    if not P["bench"]:
        return []
    checks = [f for b in BENCH_BASES for f in
              (table_files(f"rounding_{b}") if "rounding" in P["bench"] else [])
              + (table_files(f"latency_budget_{b}") if "latency" in P["bench"] else [])]
    return [f"{RESULTS}/bench/{b}.parquet" for b in BENCH_BASES] + [
        f"{RESULTS}/bench/pareto_{b}.parquet" for b in BENCH_BASES] + checks


def table4_targets():
    """Table 4 and the speedup figures (built with the other tables: the DVC stage `report`)."""
    return table_files("table4") + [f"{RESULTS}/figures/{f}_{b}.png" for b in BENCH_BASES
                                     for f in ("fig_speedup_vs_flops", "fig_pareto")] if bench_targets() else []


def hardware_targets():
    return bench_targets() + table4_targets()


SPEED = config.get("speed_check", {})


def bench_check_inputs(wildcards):
    return dict(base=model_files(BASE_DIR.format(base=wildcards.base)), caches=prepared_files(wildcards.base),
                data=dataset_inputs(BASES[wildcards.base]["dataset"]))


def bench_subtask_def(base, key):
    s = P["bench"][key].get("subtask", bench_subtasks(base)[0])
    return s, SUBTASKS[BASES[base]["dataset"]][s]
