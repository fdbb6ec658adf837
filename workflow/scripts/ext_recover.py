"""One recovery of the comparison: `nuwa finetune --recovery R` (closed-form or distill) on a NuWa
model of the main run that had no recovery, then test top-1 of the result, with the seconds the
recovery took (the main run's pruning seconds come with it, for the total derivation cost)."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, run_nuwa, start, write_json  # noqa: E402

log = start(sm, "ext_recover")
from nuwa.evaluate import evaluate_dir  # noqa: E402

p, w = sm.params, sm.wildcards
pruned, out = model_dir(sm.input.pruned), model_dir(sm.output.model)
ft, ev = dict(p.finetune), dict(p.eval)
limit = ["--limit", ft["limit"]] if ft.get("limit") is not None else []
run_nuwa([["finetune", "--model", pruned, "--data", p.spec, "--recovery", w.recovery, "--base",
           model_dir(sm.input.base), "--epochs", ft["epochs"], "--seed", w.seed, *limit, "--out", out]],
         sm.log[0], options=p.options)
r = read_json(Path(out) / "report.json")
after = evaluate_dir(out, p.spec, limit=ev.get("limit"), batch_size=ev.get("batch_size", 256))
d = read_json(Path(pruned) / "report.json")
write_json(sm.output.json, dict(
    base=w.base, subtask=w.subtask, alpha=float(w.alpha), seed=int(w.seed), recovery=w.recovery,
    test_top1=after["top1"], test_n=after["n"], val_top1_before=r["val_top1_before_recovery"], val_top1=r["val_top1"],
    val_loss_before=r["val_loss_before_recovery"], val_loss=r["val_loss"], epochs=r["finetune_epochs"],
    limit=ft.get("limit"), recovery_params=r["recovery_params"], recovery_seconds=r["seconds"]["recovery"],
    derive_seconds=d["derive_seconds"], rate_achieved=d["rate_achieved"]))
log.info("%s at alpha %s: test top-1 %.4f, recovery %.1f s", w.recovery, w.alpha, after["top1"],
         r["seconds"]["recovery"])
