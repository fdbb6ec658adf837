"""One ablation derivation: NuWa with changed options (a dimension excluded, fixed-rate ranking,
score-based query-key/value selection, other gamma ratios) at alpha, no recovery; then recovery
(fine-tuning on the fit split, `limit` samples per epoch) and test top-1 of both models."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, run_nuwa, start, write_json  # noqa: E402

log = start(sm, "ablation_run")
from nuwa.evaluate import evaluate_dir  # noqa: E402
from nuwa.paper.records import ABLATION_NAMES, derivation_record  # noqa: E402

p, w = sm.params, sm.wildcards
pruned, finetuned = model_dir(sm.output.pruned), model_dir(sm.output.finetuned)
ft, ev = dict(p.finetune), dict(p.eval)
# The command lines of the derive and finetune rules, with the variant's options.
run_nuwa([["derive", "--model", p.base_dir, "--data", p.spec, "--classes", ",".join(map(str, p.classes)),
           "--rate", w.alpha, "--metric", p.metric, "--method", "nuwa", "--recovery", "none", "--seed", w.seed,
           "--out", pruned],
          ["finetune", "--model", pruned, "--data", p.spec, "--recovery", "finetune", "--epochs", ft["epochs"], "--seed", w.seed,
           *(["--limit", ft["limit"]] if ft.get("limit") is not None else []), "--out", finetuned]],
         sm.log[0], options=p.options)
d, f = read_json(Path(pruned) / "report.json"), read_json(Path(finetuned) / "report.json")
kw = dict(limit=ev.get("limit"), batch_size=ev.get("batch_size", 256), per_image=True)
before, after = evaluate_dir(pruned, p.spec, **kw), evaluate_dir(finetuned, p.spec, **kw)
a = d["options"]["adaptive"]  # what the derivation ran with
write_json(sm.output.json, dict(
    derivation_record(d, f, before, after, base=w.base, subtask=w.subtask, kind=p.kind, alpha=w.alpha, seed=w.seed,
                      names=ABLATION_NAMES),
    variant=w.variant, exclude=sorted(a["exclude"]), global_ranking=a["global_ranking"], svd=d["options"]["svd"],
    gamma_ratio=list(a["gamma_ratio"]), gamma_qkv=a["gamma_qkv"], layers=d["layers"], finetune_epochs=ft["epochs"],
    finetune_limit=ft.get("limit")))
log.info("%s alpha %s: top-1 %.4f -> %.4f after recovery (rate %.3f)", w.variant, w.alpha, before["top1"],
         after["top1"], d["rate_achieved"])
