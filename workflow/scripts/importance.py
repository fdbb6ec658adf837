"""Taylor importance (Eq. 3-4) of heads, MLP neurons and embedding dims for one sub-task.

scope "derive": on the classifier-sliced, depth-pruned base -- the scores NuWa ranks heads and
neurons by; scope "full": on the classifier-sliced base with all layers, so vectors of different
sub-tasks cover the same units (Fig. 5). Also writes the one-shot decisions (depth, heads kept).
"""
import sys
from pathlib import Path

import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start, write_json  # noqa: E402

log = start(sm, "importance")
from nuwa import io  # noqa: E402
from nuwa.atomic import atomic_path  # noqa: E402
from nuwa.importance import Taylor  # noqa: E402
from nuwa.methods.nuwa import one_shot  # noqa: E402
from nuwa.options import DeriveOptions  # noqa: E402
from nuwa.prune import prune_classifier  # noqa: E402
from nuwa.schedule import select_heads  # noqa: E402
from nuwa.task import open_subtask  # noqa: E402

opts = DeriveOptions.from_dict(dict(sm.params.options))
base_dir = Path(sm.params.base_dir)
base = io.load(base_dir)
task = open_subtask(sm.params.spec, base, list(sm.params.classes), opts=opts)
# NuWa's own one-shot stage (classifier slice, depth by the per-layer classifiers `nuwa prepare`
# cached), so these scores are the ones `nuwa derive` ranks by; and the slice alone, all layers.
pruned, info = one_shot(base, base_dir, task, opts)
sliced = prune_classifier(base, task.classes)
accs = info.get("layer_val_top1")  # absent when depth is not pruned
taylor = Taylor(microbatch=opts.taylor_microbatch)


def scores_of(model, scope):
    batches = task.batches(task.fit, opts.score_samples, seed=sm.params.seed, batch_size=opts.batch_size,
                           desc=f"importance ({scope})")
    return taylor(model, batches)


rows = []
kept = None
for scope, model in (("derive", pruned), ("full", sliced)):
    s = scores_of(model, scope)
    if scope == "derive":
        kept = select_heads(s.heads, opts.rho_head) if opts.prune_heads else \
            [list(range(len(h))) for h in s.heads]
    for kind, per_layer in (("head", s.heads), ("neuron", s.neurons)):
        for layer, values in enumerate(per_layer):
            rows += [(scope, layer, i, kind, float(v)) for i, v in enumerate(values.tolist())]
    rows += [(scope, -1, i, "embed", float(v)) for i, v in enumerate(s.embed.tolist())]
    log.info("%s: depth %d, %d forward/backward passes", scope, model.config.depth, s.passes)
df = pd.DataFrame(rows, columns=["scope", "layer", "index", "kind", "score"])
with atomic_path(sm.output.scores) as tmp:
    df.to_parquet(tmp, index=False)
write_json(sm.output.oneshot, dict(subtask=sm.wildcards.subtask, classes=task.classes, depth=pruned.config.depth,
                                   base_depth=base.config.depth, layer_val_top1=accs, heads_kept=kept,
                                   rho_depth=opts.rho_depth, rho_head=opts.rho_head))
