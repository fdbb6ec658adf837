"""Latency-budget derivations (`--latency-ms`) at fractions of the base's latency, each result
timed again by `nuwa bench` in a fresh process (results/PROFILE/tables/latency_budget_B.*)."""
import json
import subprocess
import sys
import tempfile

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import NuwaFailed, read_json, run_nuwa, start  # noqa: E402

log = start(sm, "latency_budget")
import nuwa  # noqa: E402
from nuwa.bench import measure_latency  # noqa: E402
from nuwa.options import DeriveOptions  # noqa: E402
from nuwa.paper.table4 import budget_check  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

p = sm.params
c = dict(p.check)
batch, runtime, repeats = int(c.get("batch_size", 1)), c.get("runtime", "torch"), int(c.get("repeats", 30))
timing = dict(batch_size=batch, runtime=runtime, threads=sm.threads, repeats=repeats)
base_ms = measure_latency(nuwa.load(p.base_dir), **timing)["latency_ms_median"]
log.info("base: %.3f ms per batch of %d (%s, %d threads)", base_ms, batch, runtime, sm.threads)
options = dict(p.options, latency_batch=batch, latency_runtime=runtime, latency_threads=sm.threads)
DeriveOptions.from_dict(options)  # a bad option fails the job; only what `nuwa derive` refuses becomes a row
rows = []
for frac in c["fractions"]:
    budget = float(frac) * base_ms
    with tempfile.TemporaryDirectory() as d:
        try:
            run_nuwa([["derive", "--model", p.base_dir, "--data", p.spec, "--classes", ",".join(map(str, p.classes)),
                       "--latency-ms", budget, "--recovery", "none", "--seed", 0, "--out", f"{d}/edge"]],
                     sm.log[0], options=options)
        except NuwaFailed as e:  # an unreachable budget is an answer too (same columns, no model)
            if e.status != 2:  # 2: an error of the request, not of the program
                raise
            rows.append(dict(fraction=float(frac), base_latency_ms=base_ms, subtask=p.subtask, runtime=runtime,
                             batch_size=batch, budget_ms=budget, latency_ms_in_derivation=None,
                             latency_ms_fresh=None, meets_budget=None, headroom=None, rate_achieved_flops=None,
                             depth=None, error=e.error))
            log.info("budget %.3f ms: %s", budget, e.error)
            continue
        rep = read_json(f"{d}/edge/report.json")
        fresh = subprocess.run([sys.executable, "-m", "nuwa.cli", "bench", "--model", f"{d}/edge", "--batch-size",
                                str(batch), "--runtime", runtime, "--threads", str(sm.threads), "--repeats",
                                str(repeats)], capture_output=True, text=True, check=True)
        fresh_ms = json.loads(fresh.stdout.strip().splitlines()[-1])["latency_ms_median"]
    row = dict(fraction=float(frac), base_latency_ms=base_ms, subtask=p.subtask, runtime=runtime, batch_size=batch,
               **budget_check((rep.get("latency") or {}).get("latency_ms_median"), fresh_ms, budget),
               rate_achieved_flops=rep["rate_achieved_flops"], depth=rep["depth"], error=None)
    rows.append(row)
    log.info("budget %.3f ms (%.0f%% of base): %.3f ms in a fresh process -> %s", budget, 100 * frac, fresh_ms,
             "met" if row["meets_budget"] else "NOT met")
o = sm.output
write_table(pd.DataFrame(rows), o.csv, o.md, o.parquet,
            title=f"Latency budgets ({runtime}, batch {batch}, {sm.threads} threads): the derived edge ViT timed "
                  "again in a fresh process")
