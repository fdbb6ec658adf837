"""Fig. 8: layer-wise class-token attention maps and the attention rollout of edge ViTs derived
for different sub-tasks, on the same images: the first test image of each of two sub-tasks
(its first class) and a composite with the two side by side (each shrunk to half size, on a
black canvas, vertically centred), so each model can show which half it attends to."""
import sys

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402

log = start(sm, "fig8")
from _interpret_plot import plt, save, show_image  # noqa: E402
from nuwa.progress import bar  # noqa: E402

import nuwa  # noqa: E402
from nuwa.data import open_split  # noqa: E402
from nuwa.interpret.rollout import attention_maps  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

models = {name: nuwa.load(path) for name, path in sm.params.models.items()}
cfg = next(iter(models.values())).config
H, W = cfg.img_size
test = open_split(sm.params.spec, "test", img_size=cfg.img_size)
targets = np.asarray(test.targets)


def resized(image, size):
    x = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].round().clamp(0, 255).to(torch.uint8)


picked, captions = [], []
for subtask, indices in sm.params.images.items():
    i = int(np.flatnonzero(targets == indices[0])[0])  # the first test image of the sub-task's first class
    picked.append(resized(test[i][0], (H, W)))
    captions.append(f"{subtask}: {test.class_names[indices[0]]} (test #{i})")
half = [resized(p, (H // 2, W // 2)) for p in picked]
composite = torch.zeros_like(picked[0])
top = (H - H // 2) // 2
composite[:, top:top + H // 2, :W // 2] = half[0]
composite[:, top:top + H // 2, W // 2:W // 2 + W // 2] = half[1]
picked.append(composite)
captions.append(f"composite: {' + '.join(s for s in sm.params.images)}")
batch = torch.stack(picked)

results, rows = {}, []
for name, model in bar(models.items(), desc="models"):
    out = attention_maps(model, batch)
    results[name] = out
    names = model.config.class_names or [str(c) for c in range(model.config.num_classes)]
    for k, caption in enumerate(captions):
        r = out["rollout"][k].double()
        gw = r.shape[1]
        left, right = r[:, : gw // 2].sum().item(), r[:, gw - gw // 2:].sum().item()
        prob = out["logits"][k].softmax(-1)
        rows.append(dict(model=name, alpha=float(sm.params.alpha) if name != "base" else 0.0, image=caption,
                         layers=int(out["layers"].shape[1]), predicted=names[int(prob.argmax())],
                         confidence=float(prob.max()), rollout_mass_left=left, rollout_mass_right=right))
table = pd.DataFrame(rows)
write_table(table, sm.output.csv, sm.output.md, sm.output.parquet,
            title="Fig. 8: predictions and rollout mass on each image half")
log.info("\n%s", table.to_string())

depth = max(int(o["layers"].shape[1]) for o in results.values())
n_rows = len(captions) * len(models)
fig, axes = plt.subplots(n_rows, depth + 2, figsize=(0.95 * (depth + 2), 1.05 * n_rows + 0.4), squeeze=False)
r = 0
for k, caption in enumerate(captions):
    for name, out in results.items():
        row = axes[r]
        show_image(row[0], batch[k])
        label = f"{name} (a={sm.params.alpha})" if name != "base" else "base"
        row[0].set_ylabel(f"{label}\n{caption.split(' (')[0]}", fontsize=6)
        L = out["layers"].shape[1]
        for l in range(depth):
            ax = row[1 + l]
            ax.set_xticks([])
            ax.set_yticks([])
            if l < L:
                ax.imshow(out["layers"][k, l].numpy(), cmap="inferno", interpolation="nearest")
            else:
                ax.axis("off")  # a depth-pruned model has fewer layers
            if r == 0:
                ax.set_title(f"layer {l + 1}")
        ax = row[-1]
        show_image(ax, batch[k])
        m = out["rollout"][k][None, None]
        ax.imshow(F.interpolate(m, size=(H, W), mode="nearest")[0, 0].numpy(), cmap="inferno", alpha=0.6,
                  interpolation="nearest")
        pred = table[(table.model == name) & (table.image == caption)].iloc[0]
        ax.set_xlabel(f"{pred.predicted} {100 * pred.confidence:.0f}%", fontsize=6)
        if r == 0:
            ax.set_title("rollout")
        r += 1
fig.suptitle("Fig. 8: class-token attention per layer (heads averaged) and rollout; rows: image x model", fontsize=8)
fig.tight_layout()
save(fig, sm.output.png)
log.info("wrote %s", sm.output.png)
