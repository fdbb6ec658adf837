"""Per-dimension sweep of one sub-task (paper Table 1, Fig. 12): the classifier-sliced base with
only the query-key, value, expansion or embedding size pruned at each rate, by SVD and/or score,
no recovery; test top-1 on (the first `eval_limit` of) the sub-task's test samples."""
import sys
from pathlib import Path

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "ablation_sweep")
from nuwa import io  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.data import class_subset, open_split  # noqa: E402
from nuwa.options import DeriveOptions  # noqa: E402
from nuwa.base import base_embed_scores  # noqa: E402
from nuwa.task import open_subtask  # noqa: E402
from nuwa.importance import Taylor  # noqa: E402
from nuwa.prune import prune_classifier  # noqa: E402
from nuwa.paper.ablation_sweep import SweepScores, sweep  # noqa: E402
from nuwa.evaluate import evaluate  # noqa: E402
from nuwa.train import seed_everything  # noqa: E402

p = sm.params
cfg = dict(p.sweep)
seed_everything(p.seed)
opts = DeriveOptions.from_dict(dict(p.options))
base = io.load(p.base_dir)
task = open_subtask(p.spec, base, list(p.classes), opts=opts)
sliced = prune_classifier(base, task.classes)
# Taylor scores of the sliced base on the sub-task's fit split (training data only): query-key,
# value and neuron groups in one pass. Embedding scores: the base's all-class ones, as NuWa uses
# (cached next to the base by `nuwa prepare`).
batches = task.batches(task.fit, opts.score_samples, seed=p.seed, batch_size=opts.batch_size, desc="importance")
taylor = Taylor(microbatch=opts.taylor_microbatch)(sliced, batches)
embed, _ = base_embed_scores(base, Path(p.base_dir), task, opts)
scores = SweepScores(qk=taylor.qk, v=taylor.v, neurons=taylor.neurons, embed=embed)
test = class_subset(open_split(p.spec, "test", img_size=base.config.img_size), task.classes)
limit = cfg.get("eval_limit")


def top1(model):
    return evaluate(model, test, limit=limit, batch_size=cfg.get("batch_size", 256), desc=None, per_image=True)


rows = sweep(sliced, dims=cfg["dims"], rates=cfg["rates"], scores=scores, evaluate=top1, desc="sweep")
df = pd.DataFrame(rows).assign(base=sm.wildcards.base, subtask=sm.wildcards.subtask, kind=p.kind)
with atomic_path(sm.output.rows) as tmp:
    df.to_parquet(tmp, index=False)
for r in rows:
    log.info("%-5s %-5s rate %.2f size %s top-1 %.4f", r["dim"], r["technique"], r["rate"], r["size"], r["top1"])
