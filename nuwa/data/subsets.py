"""Choosing classes and carving validation sets, always deterministic and label-aware."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..errors import NuwaError
from .datasets import SubsetDataset


def _index_of(token: str | int, class_names: Sequence[str]) -> int:
    n = len(class_names)
    if isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        if not 0 <= token < n:
            raise NuwaError(f"class index {int(token)} is out of range 0..{n - 1}")
        return int(token)
    if not isinstance(token, str):
        raise NuwaError(f"class {token!r} must be a name or an integer index")
    text = token.strip()
    if not text:
        raise NuwaError("empty class name in the class list")
    lowered = [c.strip().lower() for c in class_names]
    # Names win over indices, so folder classes called "3", "7" ... mean what they say.
    if text.lower() in lowered:
        return lowered.index(text.lower())
    try:
        number = int(text)
    except ValueError:
        close = difflib.get_close_matches(text.lower(), lowered, n=1, cutoff=0.6)
        if close:
            raise NuwaError(f"unknown class {text!r}; did you mean {class_names[lowered.index(close[0])]!r}?") from None
        shown = ", ".join(class_names[:20]) + (", ..." if n > 20 else "")
        raise NuwaError(f"unknown class {text!r}; known classes: {shown}") from None
    return _index_of(number, class_names)


def resolve_classes(classes: str | Sequence[str | int], class_names: Sequence[str]) -> list[int]:
    """Turn "Sandal,Sneaker,7" (or a list of names / indices) into class indices, in order.

    Names match case-insensitively after stripping; integers are indices. At least two
    distinct classes are required: a one-class classifier is not a classifier.
    """
    spec = classes
    if isinstance(classes, str):
        if not classes.strip():
            raise NuwaError(f"class list {classes!r} is empty")
        tokens: list[Any] = classes.split(",")
    else:
        tokens = list(classes)
        if not tokens:
            raise NuwaError(f"class list {classes!r} is empty")
    out: list[int] = []
    for token in tokens:
        i = _index_of(token, class_names)
        if i in out:
            raise NuwaError(f"class {class_names[i]!r} (index {i}) is given twice in {spec!r}")
        out.append(i)
    if len(out) < 2:
        raise NuwaError(f"class list {spec!r} names only {len(out)} class; need at least 2")
    return out


def class_subset(ds: Dataset, classes: Sequence[int]) -> SubsetDataset:
    """Only the samples of `classes`, relabelled 0..k-1 in the order of `classes`."""
    names = list(ds.class_names)  # type: ignore[attr-defined]
    classes = [int(c) for c in classes]
    for c in classes:
        if not 0 <= c < len(names):
            raise NuwaError(f"class index {c} is out of range 0..{len(names) - 1}")
    if len(set(classes)) != len(classes):
        raise NuwaError(f"classes={classes} holds a duplicate")
    targets = np.asarray(ds.targets, dtype=np.int64)  # type: ignore[attr-defined]
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    new = remap[targets]
    keep = np.flatnonzero(new >= 0)
    return SubsetDataset(ds, keep, new[keep], [names[c] for c in classes])


def train_val_split(ds: Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[SubsetDataset, SubsetDataset]:
    """Stratified, seeded split: each class gives round(val_fraction * its size) samples
    to validation. Both parts keep the parent's labels and index order."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise NuwaError(f"val_fraction={val_fraction!r} must be strictly between 0 and 1")
    targets = np.asarray(ds.targets, dtype=np.int64)  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    val_parts = []
    for c in np.unique(targets):  # sorted: the rng is consumed in the same order every run
        members = np.flatnonzero(targets == c)
        k = int(round(float(val_fraction) * len(members)))
        val_parts.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    if len(val) == 0:
        raise NuwaError(f"val_fraction={val_fraction} leaves no validation samples out of {len(targets)}")
    is_val = np.zeros(len(targets), dtype=bool)
    is_val[val] = True
    train = np.flatnonzero(~is_val)
    if len(train) == 0:
        raise NuwaError(f"val_fraction={val_fraction} leaves no training samples out of {len(targets)}")
    return SubsetDataset(ds, train), SubsetDataset(ds, val)
