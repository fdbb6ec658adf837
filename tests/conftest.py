"""Shared fixtures: tiny configs and models that build in milliseconds, and the session's costly
artefacts, each built once and shared by every module that reads it:

- `npz`, `base_dir`: a tiny blob data set and a base pretrained on it (`nuwa pretrain`);
- `built`: the workflow's `test` profile run end to end by the real `snakemake` command in a
  temporary copy of the repository (tests that change that copy take `built_copy` instead).

Tests that would change a shared artefact (beyond the per-base caches a derivation writes next to
its base, which give the same results whoever writes them first) work on a copy.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import nuwa

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread, here and in every `nuwa` process a test starts (the workflow's jobs set their
# rule's threads themselves): the test models are tiny, and on 2 cores a second thread only
# spin-waits (a 6-epoch pretraining of the blob base took 4.5 s of CPU with one thread, 30 s with
# two on the shared machine). In-process and subprocess runs keep the same thread count, so
# their bytes stay comparable (test_reliability.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def irregular_config(**kw) -> nuwa.EdgeViTConfig:
    """A pruned-looking config: per-layer heads, qk != v, odd MLP widths, explicit scale."""
    layers = [
        nuwa.LayerConfig(num_heads=3, qk_dim=16, v_dim=8, mlp_dim=100),
        nuwa.LayerConfig(num_heads=1, qk_dim=5, v_dim=12, mlp_dim=7, attn_scale=0.3),
        nuwa.LayerConfig(num_heads=2, qk_dim=8, v_dim=8, mlp_dim=64),
    ]
    base = dict(layers=layers, embed_dim=40, img_size=28, patch_size=7, in_chans=1, num_classes=4,
                mean=(0.5,), std=(0.25,), classes=[7, 5, 9, 1], class_names=["a", "b", "c", "d"])
    base.update(kw)
    return nuwa.EdgeViTConfig(**base)


@pytest.fixture
def irregular_model() -> nuwa.EdgeViT:
    torch.manual_seed(0)
    model = nuwa.EdgeViT(irregular_config())
    # Non-trivial norms and biases so that every tensor matters in equality tests.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


# ---- the tiny blob data set and its base (session-wide) -------------------------------------------
CLASSES = ["north", "south", "east", "west", "centre", "corner"]


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 uint8 images; the class is where a bright blob sits (learnable in a few epochs)."""
    where = {0: (2, 10), 1: (18, 10), 2: (10, 18), 3: (10, 2), 4: (10, 10), 5: (18, 18)}
    x = rng.integers(0, 60, size=(len(labels), 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, col = where[int(c)]
        x[i, r:r + 8, col:col + 8] = rng.integers(180, 255)
    return x


def write_blobs(path: Path, *, seed: int, n_train: int, n_test: int, n_classes: int = len(CLASSES)) -> Path:
    """A blob data set as an npz file, labelled with CLASSES' names (labels < n_classes)."""
    rng = np.random.default_rng(seed)
    y_train, y_test = rng.integers(0, n_classes, n_train), rng.integers(0, n_classes, n_test)
    np.savez(path, x_train=_images(y_train, rng), y_train=y_train, x_test=_images(y_test, rng), y_test=y_test,
             class_names=np.array(CLASSES))
    return path


@pytest.fixture(scope="session")
def npz(tmp_path_factory) -> str:
    """The six-class blob set (1200 train, 240 test images) as a data spec."""
    return f"npz:{write_blobs(tmp_path_factory.mktemp('data') / 'blobs.npz', seed=0, n_train=1200, n_test=240)}"


BASE_EPOCHS = 6


@pytest.fixture(scope="session")
def base_dir(npz, tmp_path_factory) -> Path:
    """A depth-4, 48-dim base pretrained on the blob set by `nuwa pretrain` (in-process: the same
    `main(argv)` that `python -m nuwa.cli` runs); it learns the task to test top-1 > 0.9."""
    from nuwa.cli import main

    out = tmp_path_factory.mktemp("models") / "base"
    argv = ["pretrain", "--model", "deit_tiny_patch16_224", "--data", npz, "--patch-size", "7", "--embed-dim", "48",
            "--depth", "4", "--num-heads", "3", "--epochs", str(BASE_EPOCHS), "--batch-size", "32", "--no-augment",
            "--seed", "0", "--out", str(out)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    assert code == 0, stderr.getvalue()[-3000:]
    assert json.loads(stdout.getvalue().strip().splitlines()[-1])["test_top1"] > 0.9
    return out


# ---- the workflow's `test` profile, built once ---------------------------------------------------------
@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(repository copy, the finished `snakemake --profile workflow/profiles/default --config
    profile=test` run): every table, figure, ablation, interpretation and extension of the profile.
    Read it only; to change it, take `built_copy`."""
    from tests.test_workflow import SNAKEMAKE, copy_repo, run

    if not Path(SNAKEMAKE).exists():
        pytest.skip("snakemake is not installed next to python")
    repo = copy_repo(tmp_path_factory.mktemp("workflow") / "repo")
    proc = run([SNAKEMAKE, "--profile", "workflow/profiles/default", "--config", "profile=test"], repo)
    return repo, proc


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy with every file's timestamps (Snakemake compares them) and the .venv link kept."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    """A private copy of the built repository, for a test that reruns or changes something in it."""
    return copy_tree(built[0], tmp_path / "repo")
