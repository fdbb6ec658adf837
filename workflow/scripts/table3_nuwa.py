"""Table 3 in miniature: one row per (base, sub-task, method, alpha, seed) with test top-1 before
and after fine-tuning, params, FLOPs and the rate achieved; plus two base rows per sub-task (full
and sliced classifier). Also the headline numbers for `dvc metrics` (results/PROFILE/metrics.json)."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start, write_json  # noqa: E402

log = start(sm, "table3")
from nuwa.tables import write_table  # noqa: E402

derived = pd.DataFrame([read_json(p) for p in sm.input.metrics])
sizes = derived.groupby("base")[["base_params", "base_flops"]].first()
rows = []
for path, pair in zip(sm.input.base, sm.params.pairs):
    e = read_json(path)
    base, subtask, kind = pair["base"], pair["subtask"], pair["kind"]
    for method, top1 in (("base (full classifier)", e["top1"]), ("base (sliced classifier)", e["top1_sliced"])):
        rows.append(dict(base=base, subtask=subtask, kind=kind, n_classes=len(e["classes"]), method=method,
                         alpha=0.0, seed=None, top1=top1, top1_before_finetune=None,
                         params=int(sizes.loc[base, "base_params"]), flops=int(sizes.loc[base, "base_flops"]),
                         rate_achieved=0.0, depth=None, embed_dim=None, derive_seconds=None, finetune_seconds=None))
for r in derived.itertuples():
    rows.append(dict(base=r.base, subtask=r.subtask, kind=r.kind, n_classes=len(r.classes), method=r.method,
                     alpha=r.alpha, seed=r.seed, top1=r.test_top1_finetuned, top1_before_finetune=r.test_top1_pruned,
                     params=r.params, flops=r.flops, rate_achieved=r.rate_achieved, depth=r.depth,
                     embed_dim=r.embed_dim, derive_seconds=r.derive_seconds, finetune_seconds=r.finetune_seconds))
table = pd.DataFrame(rows)
order = {m: i for i, m in enumerate(["base (full classifier)", "base (sliced classifier)", "nuwa", "random", "nvit",
                                     "xpruner"])}
table = table.sort_values(["base", "subtask", "method", "alpha", "seed"],
                          key=lambda c: c.map(order) if c.name == "method" else c, na_position="first")
table = table.astype({"seed": "Int64", "depth": "Int64", "embed_dim": "Int64"}).reset_index(drop=True)
for col in ("top1", "top1_before_finetune", "rate_achieved", "derive_seconds", "finetune_seconds"):
    table[col] = table[col].astype(float).round(4)
metric = derived["metric"].iloc[0]
write_table(table, sm.output.csv, sm.output.md, sm.output.parquet,
            title=f"Table 3 (miniature): test top-1 of derived models after fine-tuning (top1) and before "
                  f"(top1_before_finetune), vs the base with its full and sliced classifier; alpha and "
                  f"rate_achieved in {metric}")

summary = dict(n_models=int(len(derived)), metric=metric)
for method, g in derived.groupby("method"):
    summary[method] = {f"top1_alpha_{a:g}": round(float(x), 4) for a, x in g.groupby("alpha")["test_top1_finetuned"].mean().items()}
    summary[method]["top1_mean"] = round(float(g["test_top1_finetuned"].mean()), 4)
    summary[method]["top1_before_finetune_mean"] = round(float(g["test_top1_pruned"].mean()), 4)
    summary[method]["rate_achieved_mean"] = round(float(g["rate_achieved"].mean()), 4)
base_rows = table[table.method.str.startswith("base")]
summary["base"] = {"top1_full_mean": round(float(base_rows[base_rows.method.str.contains("full")].top1.mean()), 4),
                   "top1_sliced_mean": round(float(base_rows[base_rows.method.str.contains("sliced")].top1.mean()), 4)}
write_json(sm.output.summary, summary)
log.info("%d rows; summary %s", len(table), summary)
