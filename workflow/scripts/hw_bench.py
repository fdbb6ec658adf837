"""Time the base and its NuWa edge ViTs (one process, every core) and write one row per
(model, runtime, batch size) to results/PROFILE/bench/BASE.parquet."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "hw_bench")
import nuwa  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.paper.table4 import bench_models  # noqa: E402

b = sm.params.bench
models = ((labels, nuwa.load(directory)) for labels, directory in sm.params.models)
rows = bench_models(models, batch_sizes=b.get("batch_sizes", [1, 64]), runtimes=b.get("runtimes", ["torch", "onnx"]),
                    threads=sm.threads, warmup=b.get("warmup", 3), repeats=b.get("repeats", 20),
                    min_seconds=b.get("min_seconds", 0.0), device=b.get("device", "cpu"), desc=f"bench {sm.wildcards.base}")
for r in rows.to_dict("records"):
    err = r.get("error")
    log.info("%s %s alpha=%s %s batch %s: %s", r["base"], r["subtask"], r["alpha"], r["runtime"], r["batch_size"],
             err if isinstance(err, str) else f"{r['latency_ms_median']:.3f} ms")
with atomic_path(sm.output[0]) as tmp:
    rows.to_parquet(tmp, index=False)
