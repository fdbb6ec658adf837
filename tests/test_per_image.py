"""Per-image correctness from `evaluate` and `evaluate_dir`: compact, and aligned image by image
between models evaluated on the same classes (what the ledger's paired bootstrap relies on)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nuwa
from nuwa import io
from nuwa.correctness import unpack_correct
from nuwa.data import class_subset, open_split
from nuwa.evaluate import evaluate, evaluate_dir
from nuwa.prune import prune_classifier

from .conftest import CLASSES, irregular_config


def test_per_image_vectors_are_aligned_across_models_and_batchings(npz, tmp_path):
    torch.manual_seed(0)
    base = nuwa.EdgeViT(irregular_config(num_classes=6, classes=None, class_names=list(CLASSES))).eval()
    classes = [1, 3, 4]
    edge = prune_classifier(base, classes)
    io.save(base, tmp_path / "base")
    io.save(edge, tmp_path / "edge")
    b = evaluate_dir(tmp_path / "base", npz, classes=classes, per_image=True)
    e = evaluate_dir(tmp_path / "edge", npz, per_image=True, batch_size=7)
    assert "correct" not in evaluate_dir(tmp_path / "edge", npz)  # only on request
    full, sliced, own = (unpack_correct(x) for x in (b["correct"], b["correct_sliced"], e["correct"]))
    assert len(full) == len(sliced) == len(own) == b["n"] == e["n"]
    assert [full.mean(), sliced.mean(), own.mean()] == pytest.approx([b["top1"], b["top1_sliced"], e["top1"]])
    # The edge model is the base with its classifier sliced: the same logits on the same images in
    # the same order, so its vector is the base's sliced one, image by image.
    assert np.array_equal(own, sliced) and not np.array_equal(full, sliced)
    # `evaluate` (the ablation sweeps, Fig. 2) gives the same vector on the same samples.
    test = class_subset(open_split(npz, "test", img_size=base.config.img_size), classes)
    r = evaluate(edge, test, per_image=True, batch_size=5, desc=None)
    assert np.array_equal(unpack_correct(r["correct"]), own) and r["top1"] == pytest.approx(e["top1"])
    assert "correct" not in evaluate(edge, test, desc=None)
