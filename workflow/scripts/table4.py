"""Table 4 (latency, speedup over the base, FLOPs bound, top-1 gain) and the speedup figures."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "table4")
from nuwa.paper.table4 import table4, speedup_figure  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

bench = pd.concat([pd.read_parquet(f) for f in sm.input.bench], ignore_index=True)
table = table4(bench, pd.read_parquet(sm.input.table3))
if table.empty:
    sys.exit("table4: no benchmark rows with both a base and an edge ViT")
o = sm.output
write_table(table, o.csv, o.md, o.parquet,
            title="Table 4: latency (ms per batch, median) and speedup of NuWa edge ViTs over their base, "
                  "vs the FLOPs bound")
for base, path in zip(sm.params.bases, o.figures):
    speedup_figure(table[table.base == base], path, title=f"{base}: measured speedup vs FLOPs bound")
for r in table.itertuples():
    log.info("%s %s batch %d alpha %.1f: speedup %.2fx of bound %.2fx (%.0f%%)", r.base, r.runtime, r.batch_size,
             r.alpha, r.speedup, r.flops_ratio, 100 * r.of_bound)
