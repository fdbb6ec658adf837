"""One ablation derivation: NuWa with changed options (a dimension excluded, fixed-rate ranking,
score-based query-key/value selection, other gamma ratios) at alpha, no recovery; then recovery
(fine-tuning on the fit split, `limit` samples per epoch) and test top-1 of both models."""
import sys
from pathlib import Path

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start, write_json  # noqa: E402

log = start(sm, "ablation_run")
from nuwa.options import DeriveOptions  # noqa: E402
from nuwa.derivation import derive, finetune_dir  # noqa: E402
from nuwa.evaluate import evaluate_dir  # noqa: E402

p, w = sm.params, sm.wildcards
opts = DeriveOptions.from_dict(dict(p.options))
pruned, finetuned = model_dir(sm.output.pruned), model_dir(sm.output.finetuned)
seed, ft, ev = int(w.seed), dict(p.finetune), dict(p.eval)
_, d = derive(p.base_dir, p.spec, classes=list(p.classes), rate=float(w.alpha), metric=p.metric, method="nuwa",
              recovery="none", seed=seed, out=pruned, options=opts)
_, f = finetune_dir(pruned, p.spec, epochs=ft["epochs"], seed=seed, out=finetuned, options=opts,
                    limit=ft.get("limit"))
kw = dict(limit=ev.get("limit"), batch_size=ev.get("batch_size", 256))
before, after = evaluate_dir(pruned, p.spec, **kw), evaluate_dir(finetuned, p.spec, **kw)
a = opts.adaptive
write_json(sm.output.json, dict(
    base=w.base, subtask=w.subtask, kind=p.kind, variant=w.variant, alpha=float(w.alpha), seed=seed,
    exclude=sorted(a.exclude), global_ranking=a.global_ranking, svd=opts.svd, gamma_ratio=list(a.gamma_ratio),
    gamma_qkv=a.gamma_qkv, metric=p.metric, top1_pruned=before["top1"], top1=after["top1"], n=after["n"],
    val_top1_pruned=d["val_top1"], val_top1=f["val_top1"], rate_achieved=d["rate_achieved"],
    params=d["params"], flops=d["flops"], base_params=d["base_params"], base_flops=d["base_flops"],
    depth=d["depth"], embed_dim=d["embed_dim"], layers=d["layers"], finetune_epochs=ft["epochs"],
    finetune_limit=ft.get("limit"), derive_seconds=d["derive_seconds"],
    finetune_seconds=f["seconds"].get("recovery")))
log.info("%s alpha %s: top-1 %.4f -> %.4f after recovery (rate %.3f)", w.variant, w.alpha, before["top1"],
         after["top1"], d["rate_achieved"])
