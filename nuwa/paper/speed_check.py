"""Paper-shaped speed check without training.

Randomly initialised DeiT-Small/DeiT-Base shapes at 224x224 are converted, NuWa-derived at each
alpha with recovery none on a small synthetic data set, and timed against their base. Weights
and data are random, so the accuracies mean nothing and the importance scores are flat-ish; what
this measures is whether cutting the seven dimensions buys the speed the FLOPs promise on this
machine at the paper's model sizes -- the architecture surgery, not the method's accuracy.
Depth pruning is off: on random weights the per-layer classifiers are at chance and would drop
layers by noise, which would exaggerate speedups.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..options import DeriveOptions
from .table4 import bench_models, table4

# Enough samples for every scoring step to run; few, because each DeiT-Base pass costs ~17.6 GMACs.
CHECK_OPTIONS = dict(prune_depth=False, score_samples=32, embed_score_samples=64, layer_head_samples=128,
                     layer_head_epochs=1, taylor_microbatch=8, batch_size=16, val_fraction=0.25)


def synthetic_npz(path: Path, *, n: int, img_size: int, num_classes: int, seed: int) -> Path:
    """Random uint8 images with labels cycling over `num_classes` (the nuwa npz layout)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, img_size, img_size, 3), dtype=np.uint8)
    y = np.arange(n) % num_classes
    np.savez(path, x_train=x, y_train=y, x_test=x[: n // 4], y_test=y[: n // 4])
    return path


def run(models: Iterable[str], alphas: Iterable[float], *, batch_sizes: Iterable[int], runtimes: Iterable[str],
        num_classes: int = 50, subtask_classes: int = 25, img_size: int = 224, samples: int = 200,
        repeats: int = 5, warmup: int = 1, threads: int | None = None, seed: int = 0,
        log=print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bench rows, Table-4-shaped summary) for every model name and alpha."""
    import timm
    import torch

    from .. import io
    from ..convert import from_timm
    from ..derivation import derive

    opts = DeriveOptions.from_dict(CHECK_OPTIONS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = synthetic_npz(tmp / "data.npz", n=samples, img_size=img_size, num_classes=num_classes, seed=seed)
        for name in models:
            torch.manual_seed(seed)
            base = from_timm(timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size))
            base_dir = tmp / name
            io.save(base, base_dir)
            edges = []
            for a in alphas:
                edge, report = derive(str(base_dir), f"npz:{data}", classes=list(range(subtask_classes)), rate=a,
                                      recovery="none", seed=seed, options=opts)
                log(f"{name} alpha {a:g}: FLOPs rate {report['rate_achieved_flops']:.3f}, "
                    f"pruning {report['derive_seconds']:.1f} s")
                edges.append((dict(base=name, subtask="synthetic", alpha=float(a),
                                   derive_seconds=report["derive_seconds"]), edge))
            rows.append(bench_models([(dict(base=name, subtask=None, alpha=None), base)] + edges,
                                     batch_sizes=batch_sizes, runtimes=runtimes, repeats=repeats, warmup=warmup,
                                     threads=threads, desc=f"bench {name}"))
    bench = pd.concat(rows, ignore_index=True)
    return bench, table4(bench)
