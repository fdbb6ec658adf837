"""The figures, one function per rule. Deterministic bytes: Agg backend, fixed size and dpi, no
software/date metadata, inputs sorted -- so identical runs give identical PNGs (and dvc.lock
does not churn)."""
import sys

import numpy as np
import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import read_json, start  # noqa: E402
from _plot import plt, save, use_font_size  # noqa: E402

log = start(sm, "figures")
use_font_size(9)
COLORS = plt.get_cmap("tab10").colors


def base_evals():
    return {e["subtask"]: e for e in (dict(read_json(p), subtask=p.rsplit("/", 1)[1].removesuffix(".json"))
                                      for p in sm.input.base)}


def fig6():
    """Test top-1 after fine-tuning vs alpha, one line per sub-task; the base (sliced) dashed."""
    df = pd.DataFrame([read_json(p) for p in sm.input.metrics])
    base = base_evals()
    methods = sorted(df["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for i, (subtask, g) in enumerate(sorted(df[df.method == method].groupby("subtask"))):
            g = g.groupby("alpha", as_index=False)["test_top1_finetuned"].mean()
            color = COLORS[i % len(COLORS)]
            ax.plot(g["alpha"], 100 * g["test_top1_finetuned"], "o-", color=color, label=subtask)
            ax.axhline(100 * base[subtask]["top1_sliced"], color=color, linestyle="--", linewidth=1)
        ax.set_xlabel(f"pruning rate alpha ({df['metric'].iloc[0]})")
        ax.set_title(f"{sm.wildcards.base}: {method} (dashed: base, sliced classifier)")
        ax.set_xticks(sorted(df["alpha"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 (%) after fine-tuning")
    axes[0][-1].legend(title="sub-task", loc="lower left")
    fig.tight_layout()
    save(fig, sm.output[0])


def fig4():
    """The base's test top-1 per sub-task with its full vs its sliced classifier."""
    base = base_evals()
    names = list(base)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(names) + 1.5), 3.2))
    full = [100 * base[n]["top1"] for n in names]
    sliced = [100 * base[n]["top1_sliced"] for n in names]
    ax.bar(x - 0.2, full, 0.4, label="full classifier", color=COLORS[7])
    ax.bar(x + 0.2, sliced, 0.4, label="sliced classifier (S)", color=COLORS[0])
    for xi, (a, b) in enumerate(zip(full, sliced)):
        ax.text(xi - 0.2, a + 0.5, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
        ax.text(xi + 0.2, b + 0.5, f"{b:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_ylim(min(full + sliced) - 10, 102)
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{sm.wildcards.base}: base with full vs sliced classifier")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save(fig, sm.output[0])


def fig5():
    """Cosine similarity between sub-tasks of the importance vectors (classifier-sliced base, all
    layers, so every sub-task scores the same units)."""
    subtasks = list(sm.params.subtasks)
    frames = {s: pd.read_parquet(p) for s, p in zip(subtasks, sm.input.scores)}
    kinds = (("head", "heads"), ("neuron", "MLP neurons"), ("embed", "embedding dims"))
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
    for ax, (kind, title) in zip(axes, kinds):
        vecs = []
        for s in subtasks:
            f = frames[s]
            f = f[(f.scope == "full") & (f.kind == kind)].sort_values(["layer", "index"])
            vecs.append(f["score"].to_numpy(dtype=np.float64))
        v = np.stack(vecs)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
        sim = v @ v.T
        low = min(0.9, np.floor(float(sim.min()) * 20) / 20)  # a colour scale that shows the differences
        im = ax.imshow(sim, vmin=low, vmax=1.0, cmap="viridis")
        for i in range(len(subtasks)):
            for j in range(len(subtasks)):
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if sim[i, j] > low + 0.6 * (1 - low) else "white")
        ax.set_xticks(range(len(subtasks)), subtasks)
        ax.set_yticks(range(len(subtasks)), subtasks)
        ax.set_title(f"{title} ({v.shape[1]} units)")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{sm.wildcards.base}: cosine similarity of Taylor importance across sub-tasks")
    fig.tight_layout()
    save(fig, sm.output[0])


{"fig6_accuracy_vs_alpha": fig6, "fig4_sliced_vs_full": fig4, "fig5_importance_similarity": fig5}[sm.rule]()
log.info("wrote %s", sm.output[0])
