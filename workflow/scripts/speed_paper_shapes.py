"""Paper-shaped speed check: derive (recovery none) from random DeiT-Small/Base shapes at 224x224
and time base vs edge ViTs; results/speed/paper_shapes.* and its figure."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "speed_paper_shapes")
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.paper.table4 import speedup_figure  # noqa: E402
from nuwa.paper.speed_check import run  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

c = sm.params.check
rows, table = run(c["models"], c["alphas"], batch_sizes=c["batch_sizes"], runtimes=c["runtimes"],
                  repeats=c.get("repeats", 5), warmup=c.get("warmup", 1), samples=c.get("samples", 200),
                  threads=sm.threads, seed=c.get("seed", 0), log=log.info)
o = sm.output
with atomic_path(o.rows) as tmp:
    rows.to_parquet(tmp, index=False)
write_table(table, o.csv, o.md, o.parquet,
            title="Paper-shaped speed check: NuWa edge ViTs of random DeiT shapes at 224x224 (recovery none) "
                  "vs their base, per runtime and batch size, against the FLOPs bound")
speedup_figure(table, o.figure, title="DeiT-Small/Base shapes, 224x224: speedup vs FLOPs bound")
for r in table.itertuples():
    log.info("%s %s batch %d alpha %.1f: %.2fx (bound %.2fx, %.0f%%; paper CPU %s)", r.base, r.runtime, r.batch_size,
             r.alpha, r.speedup, r.flops_ratio, 100 * r.of_bound, r.paper_cpu_speedup)
