"""Fig. 11: t-SNE of the base's class token after each chosen layer on a seeded random sample of
the test split, coloured by class (the paper: DeiT-Base fine-tuned on CIFAR-10)."""
import sys

import numpy as np

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start  # noqa: E402

log = start(sm, "fig11")
from _interpret_plot import class_colors, plt, save  # noqa: E402
from nuwa.progress import bar  # noqa: E402

import nuwa  # noqa: E402
from nuwa.data import SubsetDataset, open_split  # noqa: E402
from nuwa.interpret.neurons import resolve_layers  # noqa: E402
from nuwa.evaluate import collect_cls_tokens  # noqa: E402
from nuwa.interpret.tsne import tsne  # noqa: E402

o = sm.params.tsne
model = nuwa.load(model_dir(sm.input.model))
depth = len(model.blocks)
layers = resolve_layers(o["layers"], depth) if o["layers"] else list(range(depth))
test = open_split(sm.params.spec, "test", img_size=model.config.img_size)
n = min(o["samples"], len(test))
idx = np.sort(np.random.default_rng(o["seed"]).choice(len(test), size=n, replace=False))
feats, labels = collect_cls_tokens(model, SubsetDataset(test, idx), desc="class tokens")
labels = labels.numpy()
names = list(test.class_names)
colors = class_colors(len(names))
cols = min(4, len(layers))
rows = -(-len(layers) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + 0.6), squeeze=False)
for ax, l in zip(axes.flat, bar(layers, desc="t-SNE")):
    y = tsne(feats[l].numpy(), perplexity=min(o["perplexity"], (n - 2) / 3), iterations=o["iterations"],
             seed=o["seed"])
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(y[m, 0], y[m, 1], s=3, color=colors[c], label=names[c], linewidths=0)
    ax.set_title(f"layer {l + 1}")
    ax.set_xticks([])
    ax.set_yticks([])
for ax in list(axes.flat)[len(layers):]:
    ax.axis("off")
handles, lab = axes.flat[0].get_legend_handles_labels()
fig.legend(handles, lab, loc="lower center", ncol=min(5, len(lab)), markerscale=3, frameon=False)
fig.suptitle(f"Fig. 11: t-SNE of the class token per layer, {sm.params.base} "
             f"({n} test samples, perplexity {o['perplexity']})", fontsize=8)
fig.tight_layout(rect=(0, 0.1, 1, 1))
save(fig, sm.output.png)
log.info("wrote %s (layers %s, %d samples)", sm.output.png, [l + 1 for l in layers], n)
