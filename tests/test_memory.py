"""Bounded memory: a derivation streams its data. Images are read, resized and normalised a batch
at a time, and every sample budget (per-layer classifiers, embedding and importance scores) caps
what is read, so a derivation's peak memory does not grow with the size of the data set.

The scale CI affords: a small ViT at 224x224 (196 patches) on 28x28 images. Were the resized set
held in memory (1500 x 3 x 224 x 224 float32 is 900 MB), a run on 1500 images would peak hundreds
of MB above one on 300; were every token kept where only the pooled one is needed (the per-layer
classifiers' features), 1000 samples would cost 200 MB more than 100. The real-size bounds (DeiT-S in 3 GB, DeiT-B
in 6 GB) are a benchmark, scripts/derive_scale.py, with its table in results/scale/.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import nuwa
from nuwa.arch import EdgeViTConfig

from .conftest import write_blobs

# Every budget below the smaller data set's size, so both runs read the same number of images.
OPTIONS = dict(layer_head_samples=200, layer_head_epochs=2, embed_score_samples=32, score_samples=32,
               batch_size=32, val_fraction=0.1)
GROWTH_LIMIT_MIB = 150


@pytest.fixture(scope="module")
def base_224(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = EdgeViTConfig.uniform(img_size=(224, 224), patch_size=16, in_chans=1, num_classes=6, embed_dim=64,
                                   depth=4, num_heads=2, mean=(0.5,), std=(0.5,))
    return nuwa.save(nuwa.EdgeViT(config).eval(), tmp_path_factory.mktemp("base") / "base224")


def _peak_mib(base: Path, data: Path, out: Path, options: Path) -> float:
    """`nuwa derive` in its own process; its peak resident memory (ru_maxrss) in MiB."""
    cmd = [sys.executable, "-m", "nuwa.cli", "derive", "--model", str(base), "--data", f"npz:{data}",
           "--classes", "0,1", "--rate", "0.5", "--recovery", "none", "--device", "cpu", "--options", str(options),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, err[-2000:]
    return usage.ru_maxrss / 1024


@pytest.mark.slow
def test_a_derivations_peak_memory_does_not_grow_with_its_data(base_224, tmp_path):
    options = tmp_path / "options.yaml"
    options.write_text(yaml.safe_dump(OPTIONS))
    peaks = {}
    for n in (300, 1500):
        data = write_blobs(tmp_path / f"blobs{n}.npz", seed=n, n_train=n, n_test=20)
        peaks[n] = _peak_mib(base_224, data, tmp_path / f"derived{n}", options)
    assert peaks[1500] - peaks[300] < GROWTH_LIMIT_MIB, peaks


@pytest.mark.slow
def test_the_per_layer_classifiers_cost_their_features_only(base_224, tmp_path):
    """Their features are one pooled token per layer and sample (1000 x 4 x 64 floats: 1 MB)."""
    data = write_blobs(tmp_path / "blobs.npz", seed=2, n_train=1200, n_test=20)
    peaks = {}
    for n in (100, 1000):
        options = tmp_path / f"options{n}.yaml"
        options.write_text(yaml.safe_dump(dict(OPTIONS, layer_head_samples=n)))
        peaks[n] = _peak_mib(base_224, data, tmp_path / f"derived{n}", options)
    assert peaks[1000] - peaks[100] < GROWTH_LIMIT_MIB / 2, peaks


@pytest.mark.slow
def test_the_report_gives_the_peak_memory_of_every_phase(base_224, tmp_path):
    import json

    options = tmp_path / "options.yaml"
    options.write_text(yaml.safe_dump(OPTIONS))
    data = write_blobs(tmp_path / "blobs.npz", seed=1, n_train=300, n_test=20)
    _peak_mib(base_224, data, tmp_path / "derived", options)
    report = json.loads((tmp_path / "derived" / "report.json").read_text())
    peaks = report["peak_rss_mb"]
    assert set(peaks) == set(report["seconds"])
    assert all(isinstance(v, float) and v > 0 for v in peaks.values())
    assert np.all(np.diff([peaks[p] for p in ("load", "data", "prune_total")]) >= 0)  # a running maximum
    assert report["device"] == "cpu"
