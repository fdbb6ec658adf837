"""Ablation tables (Tables 1, 5, 6 and the data of Figs. 7, 12) from the sweep rows and the
ablation derivations' records, and results/PROFILE/ablations.json: the numbers a claims ledger
checks (averages over the ablation sub-tasks)."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start, write_json  # noqa: E402

log = start(sm, "ablation_tables")
from nuwa.paper import ablations as ab  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

p, o = sm.params, sm.output
sweep = pd.concat([pd.read_parquet(f) for f in sorted(sm.input.sweeps)], ignore_index=True)
runs = ab.runs_frame(read_json(f) for f in sorted(sm.input.runs))
tables = dict(
    table1_svd_vs_score=(ab.table1(sweep), "Table 1: query-key / value pruning, SVD vs score (no recovery)"),
    fig12_dimension_sweep=(ab.fig12_table(sweep), "Fig. 12: accuracy vs per-dimension pruning rate (no recovery)"),
    table5_dimension_exclusion=(ab.table5(runs, p.alpha), f"Table 5: one dimension not pruned, alpha={p.alpha:g}"),
    table6_techniques=(ab.table6(runs, p.alpha), f"Table 6: pruning techniques, alpha={p.alpha:g}"),
    fig7_gamma_grid=(ab.fig7_table(runs, p.gamma_alpha), f"Fig. 7: gamma_exp x gamma_emb, alpha={p.gamma_alpha:g}"),
)
for name, (df, title) in tables.items():
    if df.empty:
        sys.exit(f"{name}: no rows (are the ablation runs' options what the table selects?)")
    write_table(df, o[f"{name}_csv"], o[f"{name}_md"], o[f"{name}_parquet"], title=title)
    log.info("%s: %d rows", name, len(df))
summary = ab.summary(*(tables[n][0] for n in ("table1_svd_vs_score", "fig12_dimension_sweep",
                                               "table5_dimension_exclusion", "table6_techniques", "fig7_gamma_grid")))
summary.update(alpha=p.alpha, gamma_alpha=p.gamma_alpha, subtasks=sorted(set(sweep.subtask) | set(runs.subtask)),
               note="test top-1 in [0, 1], mean over sub-tasks; recovery settings in the run records")
write_json(o.summary, summary)
