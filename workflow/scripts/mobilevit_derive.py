"""One derivation of the MobileViT-compression table from the distilled student (`nuwa.derive` on a MobileViT
base), recovered by distillation from the teacher. The NuWa variants take the rate the MobileViT compression study's
`norm` achieved, so every pruned row has the same params budget."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, read_json, start  # noqa: E402

log = start(sm, "mobilevit_derive")
import nuwa  # noqa: E402
from nuwa.data.scenes import SCENE_CLASSES  # noqa: E402
from nuwa.options import DeriveOptions  # noqa: E402

variant, prune, kd = dict(sm.params.variant), dict(sm.params.prune), dict(sm.params.distill)
recovery = prune.get("recovery", {})
rate = prune["rate"] if variant["method"] == "norm" else read_json(sm.input.norm)["rate_achieved"]
classes = list(sm.params.subset) if variant.get("subset") else SCENE_CLASSES[1:]
opts = DeriveOptions(score_samples=prune.get("score_samples", 256), batch_size=int(sm.params.batch_size),
                     finetune_lr=recovery.get("lr", 5e-4), svd=variant.get("svd", "product"),
                     distill_alpha=kd.get("alpha", 0.5), distill_tau=kd.get("tau", 1.0),
                     distill_feature_weight=kd.get("feature_weight", 0.0))
_, report = nuwa.derive(model_dir(sm.input.kd), sm.params.spec, classes=classes, rate=rate,
                        metric=prune.get("metric", "params"), method=variant["method"], recovery="distill",
                        finetune_epochs=recovery.get("epochs", 1), seed=int(sm.wildcards.seed),
                        out=model_dir(sm.output), options=opts, teacher=model_dir(sm.input.teacher))
log.info("%s: rate %.3f (asked %.3f), val mIoU %.4f -> %.4f", sm.wildcards.variant, report["rate_achieved"], rate,
         report["val_miou_before_recovery"], report["val_miou"])
