"""Train one segmenter of the MobileViT-compression table (`nuwa.mobilevit.base.pretrain`): the teacher, the
baseline student, or the student distilled from the teacher."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start  # noqa: E402

log = start(sm, "mobilevit_train")
from nuwa.mobilevit.base import pretrain  # noqa: E402

train, kd = dict(sm.params.train), sm.params.distill
_, report = pretrain(
    sm.params.model, sm.params.spec, out=model_dir(sm.output), epochs=int(sm.params.epochs), seed=int(sm.params.seed),
    lr=train.get("lr", 2e-3), batch_size=train.get("batch_size", 64), decoder_dim=train.get("decoder_dim", 32),
    teacher=model_dir(sm.input.teacher) if kd is not None else None,
    kd_alpha=(kd or {}).get("alpha", 0.5), kd_tau=(kd or {}).get("tau", 1.0),
    feature_weight=(kd or {}).get("feature_weight", 0.0),
)
log.info("test mIoU %.4f %s, params %d", report["test_miou"], report["test_miou_ci"], report["params"])
