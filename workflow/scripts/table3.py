"""Table 3 in miniature (by method and long), the derivation cost per method, and the headline
numbers for `dvc metrics` (results/PROFILE/metrics.json). The builders are nuwa.paper.table3."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start, write_json  # noqa: E402

log = start(sm, "table3")
from nuwa.paper.table3 import derivation_cost, headline, table3_by_method, table3_long  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

metrics = [read_json(p) for p in sm.input.metrics]
long = table3_long(metrics, zip(sm.params.pairs, (read_json(p) for p in sm.input.base)))
metric = metrics[0]["metric"]
write_table(long, sm.output.long_csv, sm.output.long_md, sm.output.long_parquet,
            title=f"Table 3 (miniature, one row per derivation): test top-1 after fine-tuning (top1) and before "
                  f"(top1_before_finetune), vs the base with its full and sliced classifier; alpha and "
                  f"rate_achieved in {metric}")
write_table(table3_by_method(long), sm.output.csv, sm.output.md, sm.output.parquet,
            title=f"Table 3 (miniature): mean test top-1 per method, sub-task kind and alpha ({metric}), on the "
                  f"sub-tasks every method ran on")
write_table(derivation_cost(long), sm.output.cost_csv, sm.output.cost_md, sm.output.cost_parquet,
            title="Derivation cost per method: pruning only (recovery apart), mean over derivations")

summary = dict(headline(long), metric=metric)  # methods compared on the sub-tasks they all ran on
write_json(sm.output.summary, summary)
log.info("%d derivations; summary %s", summary["n_models"], summary)
