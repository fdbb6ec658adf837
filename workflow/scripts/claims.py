"""The claims ledger (results/PROFILE/claims.md and .csv) from the profile's tables (nuwa.paper.claims)."""
import sys

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "claims")
from nuwa.atomic import atomic_file  # noqa: E402
from nuwa.paper.claims import (ablation_claims, fig2_claim, fig8_claim, ledger, neuron_claim, subtask_test_images,  # noqa: E402
                               to_frame, to_markdown)
from nuwa.paper.tables import write_table  # noqa: E402

i = sm.input


def table(name):
    """An interpretation table, or None where the profile does not build it (claim: not measured)."""
    return pd.read_parquet(i[name]) if name in i.keys() else None


# The ablation tables by their short names (table1, fig12, table5, table6, fig7).
ablation_tables = {k[len("ablation_"):].split("_")[0]: pd.read_parquet(v) for k, v in i.items()
                   if k.startswith("ablation_")}
# Each sub-task's test images as indices into its data set: cells that share them count them once.
images = subtask_test_images({tuple(k[len("samples_"):].split("__", 1)): v for k, v in i.items() if k.startswith("samples_")})
claims = ledger(pd.read_parquet(i.table3), images=images, extra=[
    lambda: ablation_claims(ablation_tables, images),
    lambda: [neuron_claim(table("neurons")), fig2_claim(table("fig2")), fig8_claim(table("fig8"))],
])
with atomic_file(sm.output.md) as f:
    f.write(to_markdown(claims, title=f"Claims ledger ({sm.params.profile} profile)"))
write_table(to_frame(claims), sm.output.csv)
for c in claims:
    log.info("%s: %s (%s)", c.id, c.verdict, c.measured)
