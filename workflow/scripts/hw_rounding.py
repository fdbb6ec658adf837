"""Hardware-friendly sizes: NuWa at one alpha with sizes rounded to each multiple (1 = exact), no
recovery; test top-1 and latency per runtime and batch size (results/PROFILE/tables/rounding_B.*)."""
import sys
import tempfile

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, run_nuwa, start  # noqa: E402

log = start(sm, "rounding")
from nuwa import io  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.bench import bench_suite  # noqa: E402
from nuwa.evaluate import evaluate_dir  # noqa: E402
from nuwa.paper.table4 import rounding_table  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

p = sm.params
check, b, ev = dict(p.check), dict(p.bench), dict(p.eval)
rows = []
for multiple in check["round_to"]:
    opts = dict(p.options)
    opts["adaptive"] = dict(opts.get("adaptive", {}), round_to=int(multiple))
    with tempfile.TemporaryDirectory() as d:
        run_nuwa([["derive", "--model", p.base_dir, "--data", p.spec, "--classes", ",".join(map(str, p.classes)),
                   "--rate", check["alpha"], "--metric", p.metric, "--recovery", "none", "--seed", 0,
                   "--out", f"{d}/edge"]], sm.log[0], options=opts)
        # the layer table from the model's config: report.json stores its keys sorted
        edge, rep = io.load(f"{d}/edge"), read_json(f"{d}/edge/report.json")
        top1 = evaluate_dir(f"{d}/edge", p.spec, limit=ev.get("limit"), batch_size=ev.get("batch_size", 256))["top1"]
    timings = bench_suite(edge, batch_sizes=b.get("batch_sizes", [1, 64]), runtimes=b.get("runtimes", ["torch", "onnx"]),
                          threads=sm.threads, warmup=b.get("warmup", 3), repeats=b.get("repeats", 20),
                          on_error="record")
    for t in timings:
        rows.append(dict(base=sm.wildcards.base, subtask=p.subtask, alpha=float(check["alpha"]), round_to=int(multiple),
                         top1=top1, flops=rep["flops"], params=rep["params"], rate_achieved=rep["rate_achieved"],
                         layers=str(edge.config.layer_table()), **t))
    log.info("round_to %d: top-1 %.4f, rate %.3f, %s", multiple, top1, rep["rate_achieved"],
             ", ".join(f"{t['runtime']}/b{t['batch_size']} {t.get('latency_ms_median', float('nan')):.3f} ms"
                       for t in timings))
frame = pd.DataFrame(rows)
with atomic_path(sm.output.rows) as tmp:
    frame.to_parquet(tmp, index=False)
o = sm.output
write_table(rounding_table(frame), o.csv, o.md, o.parquet,
            title=f"Sizes rounded to a multiple (1 = exact): NuWa on {p.subtask} at alpha {check['alpha']:g}, "
                  "no recovery; top-1 and latency (ms per batch)")
