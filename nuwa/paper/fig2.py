"""Fig. 2's set-up and claim: a small base fine-tuned on class subsets vs a larger base."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NuwaError

SMALL, LARGE, TUNED = "small base (sliced)", "large base (sliced)", "small base fine-tuned"


def nested_class_subsets(num_classes: int, sizes: Sequence[int], seed: int) -> dict[int, list[int]]:
    """{k: the first k classes of one seeded permutation, sorted} for each size k <= num_classes:
    nested, so a larger subset holds every smaller one (the paper: 25, 50, 100 random classes)."""
    perm = np.random.default_rng(seed).permutation(num_classes)
    out = {int(k): sorted(int(c) for c in perm[:k]) for k in sizes if 2 <= k <= num_classes}
    if not out:
        raise NuwaError(f"subset sizes {list(sizes)}: none in 2..{num_classes}")
    return out


def finetuned_beats_larger(table: pd.DataFrame) -> tuple[bool | None, str]:
    """The point estimates behind the paper's Fig. 2 claim, for the log: on every subset the fine-tuned
    small base is above the larger base with its sliced classifier. None when the table has no
    subset. The ledger decides the claim with a bootstrap (`nuwa.paper.claims_ablations.fig2_claim`)."""
    if table.empty:
        return None, "no subset measured"
    t = table.pivot(index="size", columns="model", values="top1")
    return bool((t[TUNED] > t[LARGE]).all()), "; ".join(
        f"{k} classes: fine-tuned {100 * t.loc[k, TUNED]:.1f}% vs larger {100 * t.loc[k, LARGE]:.1f}% "
        f"(small {100 * t.loc[k, SMALL]:.1f}%)" for k in t.index)
