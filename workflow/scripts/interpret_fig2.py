"""Fig. 2: task-specific fine-tuning. Random class subsets of growing size (nested: the first k
classes of one seeded permutation); on each, the test top-1 of the small and the large base with
their classifiers sliced to the subset, and of the small base fine-tuned on the subset (classifier
sliced, then trained on the subset's training samples)."""
import sys

import numpy as np
import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start  # noqa: E402

log = start(sm, "fig2")
from _interpret_plot import plt, save  # noqa: E402

import nuwa  # noqa: E402
from nuwa.cost import count_params  # noqa: E402
from nuwa.data import SubsetDataset, class_subset, open_split  # noqa: E402
from nuwa.prune.classifier import prune_classifier  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402
from nuwa.paper.fig2 import LARGE, SMALL, TUNED, finetuned_beats_larger, nested_class_subsets  # noqa: E402
from nuwa.evaluate import evaluate  # noqa: E402
from nuwa.train import fit  # noqa: E402

o = sm.params.fig2
ft = o["finetune"]
limit = sm.params.eval.get("limit")
small_dir, large_dir = model_dir(sm.input.small), model_dir(sm.input.large)
small, large = nuwa.load(small_dir), nuwa.load(large_dir)
train = open_split(sm.params.spec, "train", img_size=small.config.img_size)
test = open_split(sm.params.spec, "test", img_size=small.config.img_size)
names = list(test.class_names)
subsets = nested_class_subsets(len(names), o["sizes"], o["seed"])
sizes = list(subsets)
if len(sizes) < len(o["sizes"]):
    log.warning("subset sizes dropped (not in 2..%d): %s", len(names), [s for s in o["sizes"] if s not in subsets])
labels = np.asarray(test.targets)
rows = []
for size, classes in subsets.items():
    keep = np.flatnonzero(np.isin(labels, classes))
    original = SubsetDataset(test, keep)  # labels stay the bases' class indices (sliced evaluation)
    common = dict(size=size, classes=",".join(map(str, classes)), class_names=", ".join(names[c] for c in classes))
    for label, model, path in ((SMALL, small, small_dir), (LARGE, large, large_dir)):
        e = evaluate(model, original, classes=classes, limit=limit, desc=f"{label} k={size}", per_image=True)
        rows.append(dict(common, model=label, dir=path, params=count_params(model), top1=e["top1"], n=e["n"],
                         correct=e["correct"]))
    tuned = prune_classifier(nuwa.load(small_dir), classes)
    fit(tuned, class_subset(train, classes), epochs=ft["epochs"], lr=ft["lr"],
        weight_decay=ft["weight_decay"], batch_size=ft["batch_size"], seed=o["seed"], limit=ft.get("limit"),
        desc=f"fine-tune k={size}")
    # class_subset keeps the test order of `keep` above: the per-image vectors of the three models align
    e = evaluate(tuned, class_subset(test, classes), limit=limit, desc=f"fine-tuned k={size}", per_image=True)
    rows.append(dict(common, model=TUNED, dir="", params=count_params(tuned), top1=e["top1"], n=e["n"],
                     correct=e["correct"]))
    log.info("k=%d classes %s: %s", size, classes, [f"{r['model']} {r['top1']:.4f}" for r in rows[-3:]])
table = pd.DataFrame(rows)
write_table(table, sm.output.csv, sm.output.md, sm.output.parquet,
            title="Fig. 2: task-specific fine-tuning of a small base vs a larger base")
holds, measured = finetuned_beats_larger(table)
log.info("fine-tuned small base beats the larger base on every subset: %s (%s)", holds, measured)

models = [SMALL, LARGE, TUNED]
colors = plt.get_cmap("tab10").colors
x = np.arange(len(sizes))
fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(sizes) + 1.5), 3.5))
for i, m in enumerate(models):
    t = table[table.model == m].set_index("size").loc[sizes]
    ax.bar(x + (i - 1) * 0.27, 100 * t.top1, 0.27, color=colors[[7, 0, 3][i]],
           label=f"{m}, {t.params.iloc[0] / 1e6:.2f} M params")
    for xi, v in zip(x, 100 * t.top1):
        ax.text(xi + (i - 1) * 0.27, v + 0.5, f"{v:.1f}", ha="center", va="bottom", fontsize=6)
ax.set_xticks(x, [f"{s} classes" for s in sizes])
low = float(100 * table.top1.min())
ax.set_ylim(max(0.0, low - 10), 102)
ax.set_ylabel("test top-1 (%) on the subset")
ax.set_title(f"Fig. 2: small base fine-tuned on random class subsets vs {sm.params.large_name}")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=6, frameon=False)  # off the bars
fig.tight_layout()
save(fig, sm.output.png)
log.info("wrote %s", sm.output.png)
