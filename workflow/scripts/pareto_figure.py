"""The Pareto figure of one base: per benchmarked sub-task, test top-1 against FLOPs and against
measured batch-1 latency for every method (nuwa.paper.pareto)."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402
from _plot import plt, save, use_font_size  # noqa: E402

log = start(sm, "pareto_figure")
from nuwa.paper.pareto import pareto_points  # noqa: E402

points = pareto_points(pd.read_parquet(sm.input.bench), pd.read_parquet(sm.input.table3))
points = points[points.base == sm.wildcards.base]
subtasks = sorted(points.subtask.unique())
use_font_size(9)
fig, axes = plt.subplots(len(subtasks), 2, figsize=(10, 3.6 * len(subtasks)), squeeze=False)
markers = dict(zip(sorted(points.method.unique()), "os^vDPX*<>"))
for row, subtask in zip(axes, subtasks):
    sub = points[points.subtask == subtask]
    for method, g in sub.groupby("method"):
        g = g.sort_values("flops")
        for ax, x, scale in ((row[0], "flops", 1e-6), (row[1], "latency_ms", 1.0)):
            ax.plot(g[x] * scale, 100 * g.top1, marker=markers[method], linestyle="-" if len(g) > 1 else "none",
                    label=method)
    row[0].set(title=f"{subtask}: top-1 vs FLOPs", xlabel="MFLOPs (MACs)", ylabel="test top-1 (%)")
    row[1].set(title=f"{subtask}: top-1 vs batch-1 latency", xlabel="latency (ms, torch)", ylabel="test top-1 (%)")
    for ax in row:
        ax.grid(alpha=0.3)
    row[1].legend(loc="lower right")
    front = sub[sub.on_front].sort_values("latency_ms")
    log.info("%s latency front: %s", subtask, ", ".join(f"{r.method}@{r.alpha:g}" for r in front.itertuples()))
fig.tight_layout()
save(fig, sm.output[0])
