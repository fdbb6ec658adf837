"""Metrics of a sweep's derivations (one per alpha): `nuwa eval` of the pruned and the fine-tuned
model on the sub-task's test samples, with sizes, rates and wall-clock seconds from their reports."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, start, write_json  # noqa: E402

log = start(sm, "metrics")
from nuwa.evaluate import evaluate_dir  # noqa: E402
from nuwa.paper.records import derivation_record  # noqa: E402

ev = dict(sm.params.eval)
kw = dict(batch_size=ev.get("batch_size", 256), limit=ev.get("limit"), per_image=True)
w = sm.wildcards
k = len(sm.input.pruned) // len(sm.params.alphas)  # files per model directory
for i, alpha in enumerate(sm.params.alphas):
    pruned = model_dir(sm.input.pruned[k * i:k * (i + 1)])
    finetuned = model_dir(sm.input.finetuned[k * i:k * (i + 1)])
    before = evaluate_dir(pruned, sm.params.spec, **kw)
    after = evaluate_dir(finetuned, sm.params.spec, **kw)
    d = read_json(Path(pruned) / "report.json")
    f = read_json(Path(finetuned) / "report.json")
    out = dict(
        derivation_record(d, f, before, after, base=w.base, subtask=w.subtask, kind=sm.params.subtask_kind,
                          alpha=alpha, seed=w.seed),
        method=w.method, classes=d["classes"], class_names=d["class_names"], rate_target=d["rate_target"],
        rate_achieved_params=d["rate_achieved_params"], rate_achieved_flops=d["rate_achieved_flops"],
        finetune_epochs=f["finetune_epochs"], derive_phase_seconds=d["seconds"],
        finetune_reused_from=f.get("reused_from"), passes=(d.get("details") or {}).get("passes"),
        # the per-image vectors are in the record already (test_correct_*): not twice
        eval_pruned={k: v for k, v in before.items() if k != "correct"},
        eval_finetuned={k: v for k, v in after.items() if k != "correct"},
    )
    write_json(sm.output.json[i], out)
    log.info("alpha %s: top-1 %.4f -> %.4f after fine-tuning; rate %.3f", alpha, before["top1"], after["top1"],
             d["rate_achieved"])
