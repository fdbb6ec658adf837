"""The MobileViT compression study's table from every row's measurements (`nuwa.paper.mobilevit_compression`): markdown, CSV of the
rows and of the paired comparisons with their verdicts."""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start  # noqa: E402

log = start(sm, "mobilevit_table")
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.paper.mobilevit_compression import compare, findings, summarise, to_markdown  # noqa: E402

records, confs = defaultdict(list), defaultdict(list)
for path in sorted(sm.input.measures, key=lambda p: read_json(p)["seed"]):
    r = read_json(path)
    records[r["row"]].append(r)
    with np.load(Path(path).with_suffix(".npz")) as z:
        confs[r["row"]].append(z["confusions"])
rows, comps = summarise(records, confs), compare(confs)
finds = findings(rows, comps)
for out, frame in ((sm.output.csv, pd.DataFrame(rows)), (sm.output.comparisons, pd.DataFrame(comps + finds))):
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
with atomic_path(sm.output.md) as tmp:
    Path(tmp).write_text(to_markdown(rows, comps, finds, subset=list(sm.params.subset), seeds=list(sm.params.seeds)))
log.info("\n%s", Path(sm.output.md).read_text())
