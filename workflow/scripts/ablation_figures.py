"""Figs. 7 and 12 of one base from the ablation tables. Deterministic bytes: Agg backend, fixed
size and dpi, no software/date metadata, rows sorted."""
import sys

import numpy as np
import pandas as pd

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import start  # noqa: E402
from _plot import plt, save, use_font_size  # noqa: E402

log = start(sm, "ablation_figures")
use_font_size(9)
base = sm.wildcards.base
df = pd.read_parquet(sm.input.table)
df = df[df.base == base]
if df.empty:
    sys.exit(f"no rows for base {base} in {sm.input.table}")


def fig12():
    """Mean test top-1 over the sub-tasks vs per-dimension rate, one line per dimension."""
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    names = dict(qk="query-key (SVD)", v="value (SVD)", mlp="expansion", embed="embedding")
    ref = df.groupby("subtask").top1_unpruned.first().mean()
    for dim in ("qk", "v", "mlp", "embed"):
        d = df[df.dim == dim].groupby("rate").top1.mean()
        if len(d):
            ax.plot([0.0, *d.index], [ref, *d.values], marker="o", label=names[dim])
    ax.set_xlabel("per-dimension pruning rate")
    ax.set_ylabel("test top-1 (no recovery)")
    ax.set_title(f"{base}: {', '.join(sorted(df.subtask.unique()))}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save(fig, sm.output.png)


def fig7():
    """Heatmap of mean test top-1 after recovery over gamma_exp (columns) x gamma_emb (rows)."""
    grid = df.groupby(["gamma_emb", "gamma_exp"]).top1.mean().unstack("gamma_exp").sort_index().sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(1.4 + 1.0 * grid.shape[1], 1.2 + 0.7 * grid.shape[0]))
    im = ax.imshow(grid.values * 100, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{v:g}" for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{v:g}" for v in grid.index])
    ax.set_xlabel("gamma_exp / gamma_qkv")
    ax.set_ylabel("gamma_emb / gamma_qkv")
    for (i, j), v in np.ndenumerate(grid.values * 100):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_title(f"{base}, alpha={df.alpha.iloc[0]:g}")
    fig.colorbar(im, ax=ax, label="test top-1 (%)")
    fig.tight_layout()
    save(fig, sm.output.png)


dict(fig7=fig7, fig12=fig12)[sm.params.figure]()
log.info("%s for %s: %d rows", sm.params.figure, base, len(df))
