"""One model as fp32 / fp16 / int8 ONNX (`nuwa.onnx_eval.compare_precisions`): file bytes, test top-1
(the model's classes; all classes for the base), ONNX Runtime median latency per batch size with
the job's threads, and agreement of the logits with fp32. Static int8 calibrates on the model's
classes of the training split."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, start, write_json  # noqa: E402

log = start(sm, "ext_export")
from nuwa.onnx_eval import compare_precisions  # noqa: E402

p, w = sm.params, sm.wildcards
x = dict(p.export)
src = model_dir(sm.input.model)
rows = compare_precisions(src, p.spec, precisions=x["precisions"], batch_sizes=x["batch_sizes"], limit=x.get("limit"),
                          threads=max(1, int(sm.threads)), calib_samples=x["calib_samples"], warmup=x["warmup"],
                          repeats=x["repeats"])
report = read_json(Path(src) / "report.json") if (Path(src) / "report.json").exists() else {}
model = dict(base=w.base, subtask=w.get("subtask", "base"), alpha=float(w.get("alpha", 0.0)),
             rate_achieved=report.get("rate_achieved", 0.0) if "alpha" in w.keys() else 0.0)
write_json(sm.output.json, [dict(model, **r) for r in rows])
for r in rows:
    log.info("%s: %d bytes, top-1 %.4f, argmax agreement %.4f, %s", r["precision"], r["bytes"], r["top1"],
             r["argmax_agreement"], {k: round(v, 3) for k, v in r.items() if k.startswith("latency")})
