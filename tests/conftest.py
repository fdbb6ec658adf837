"""Shared fixtures: tiny configs and models that build in milliseconds, and the session's costly
artefacts, each built once and shared by every module that reads it:

- `npz`, `base_dir`: a tiny blob data set and a base pretrained on it (`nuwa pretrain`);
- `built`: the workflow's `test` profile run end to end by the real `snakemake` command in a
  temporary copy of the repository (tests that change that copy take `built_copy` instead);
- `dvc_repro`: the same profile built from scratch by `dvc repro` in a git copy of its own.

The two builds start in the background with the session's first test; the tests that read them
run after the rest, and the tests marked `unloaded` run last (see "the workflow's `test` profile").
Tests that would change a shared artefact (beyond the per-base caches a derivation writes next to
its base, which give the same results whoever writes them first) work on a copy.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
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


# ---- the workflow's `test` profile, built once by Snakemake and once by DVC, in the background -----------
# Both builds are chains of single-threaded jobs that leave much of 2 cores idle (one build alone
# averaged 1.15 busy cores), so they start with the session's first test and run side by side,
# each in its own copy, while the tests that need neither run. The tests that read a build run
# after those; the tests marked `unloaded` run last, when no build runs alongside them any more.
BUILD_FIXTURES = {"built", "dvc_repro"}
BUILD_TIMEOUT = 1500  # seconds from the start, for each build


def pytest_configure(config):
    config.addinivalue_line("markers", "unloaded: needs the machine to itself (wall-clock timing, or a heavy "
                                       "multi-threaded run that contention slows several-fold); runs after "
                                       "the workflow builds")


# Modules whose every test runs Snakemake, DVC or a container build: the slow tier.
PIPELINE_MODULES = {"test_workflow", "test_container"}


def _slow(item) -> bool:
    """The full suite's own tier: a test that reads a workflow build (directly or through a fixture),
    lives in a pipeline module, or needs the machine to itself."""
    module = getattr(item, "module", None)
    return (bool(BUILD_FIXTURES & set(getattr(item, "fixturenames", ())))
            or (module is not None and module.__name__.rpartition(".")[2] in PIPELINE_MODULES)
            or item.get_closest_marker("unloaded") is not None)


def pytest_collection_modifyitems(session, config, items):
    """Mark the slow tier (`pytest -m "not slow"` leaves it out); then a stable reorder: others
    first, then the readers of a build, then the `unloaded` tests."""
    for item in items:
        if _slow(item) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)

    def group(item) -> int:
        if item.get_closest_marker("unloaded"):
            return 2
        return 1 if BUILD_FIXTURES & set(getattr(item, "fixturenames", ())) else 0

    items[:] = sorted(items, key=group)


class Build:
    """A command started in the background in a repository copy; `result()` waits for it."""

    def __init__(self, cmd: list[str], repo: Path):
        self.repo = repo
        self.logs = {name: open(repo.parent / f"{repo.name}.{name}", "w+") for name in ("stdout", "stderr")}
        self.proc = subprocess.Popen(cmd, cwd=repo, stdout=self.logs["stdout"], stderr=self.logs["stderr"],
                                     env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), start_new_session=True)
        self.deadline = time.monotonic() + BUILD_TIMEOUT

    def result(self) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        out = {}
        for name, f in self.logs.items():
            f.seek(0)
            out[name] = f.read()
        cmd = " ".join(self.proc.args)
        if self.proc.returncode != 0:
            raise AssertionError(f"{cmd} failed ({self.proc.returncode}):\n{out['stdout'][-4000:]}\n{out['stderr'][-6000:]}")
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out["stdout"], out["stderr"])

    def kill(self) -> None:
        if self.proc.poll() is None:  # it ran too long, or the session ended first (-x, an interrupt)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        for f in self.logs.values():
            f.close()


@pytest.fixture(scope="session", autouse=True)
def _workflow_builds(request, tmp_path_factory):
    """{fixture name: Build} for the builds some selected test reads, started here (the session's
    first test) in the background; nothing starts when no selected test reads a build."""
    from tests.test_workflow import DVC, SNAKEMAKE, copy_repo, run, set_param

    wanted = set()
    for item in request.session.items:
        wanted |= BUILD_FIXTURES & set(getattr(item, "fixturenames", ()))

    def snakemake_build() -> Build:
        repo = copy_repo(tmp_path_factory.mktemp("workflow") / "repo")
        return Build([SNAKEMAKE, "--profile", "workflow/profiles/default", "--config", "profile=test"], repo)

    def dvc_build() -> Build:
        repo = copy_repo(tmp_path_factory.mktemp("dvc") / "repo", git=True)
        set_param(repo, "profile", "test")
        run([DVC, "update", "data/fashion-mnist.dvc"], repo)  # the frozen input, from its recorded source
        return Build([DVC, "repro"], repo)

    builds: dict[str, Build | Exception] = {}
    if Path(SNAKEMAKE).exists():
        for name, start in (("built", snakemake_build), ("dvc_repro", dvc_build)):
            if name in wanted and (name != "dvc_repro" or Path(DVC).exists()):
                try:
                    builds[name] = start()
                except Exception as e:  # fails the tests that read this build, not the session
                    builds[name] = e
    yield builds
    for build in builds.values():
        if isinstance(build, Build):
            build.stop()


def _finished(builds: dict, name: str, missing: str) -> tuple[Path, subprocess.CompletedProcess]:
    if name not in builds:
        pytest.skip(missing)
    build = builds[name]
    if isinstance(build, Exception):
        raise build
    return build.repo, build.result()


@pytest.fixture(scope="session")
def built(_workflow_builds) -> tuple[Path, subprocess.CompletedProcess]:
    """(repository copy, the finished `snakemake --profile workflow/profiles/default --config
    profile=test` run there): every table, figure, ablation, interpretation and extension of the
    profile, built from scratch. Read it only; to change it, take `built_copy`."""
    return _finished(_workflow_builds, "built", "snakemake is not installed next to python")


@pytest.fixture(scope="session")
def dvc_repro(_workflow_builds) -> tuple[Path, subprocess.CompletedProcess]:
    """(a fresh git copy of the repository with `profile: test` and data/fashion-mnist.dvc updated,
    the finished first `dvc repro` there: every stage run from scratch). One test owns it."""
    return _finished(_workflow_builds, "dvc_repro", "dvc or snakemake is not installed next to python")


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy with every file's timestamps (Snakemake compares them) and the .venv link kept."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture
def built_copy(built, tmp_path) -> Path:
    """A private copy of the built repository, for a test that reruns or changes something in it."""
    return copy_tree(built[0], tmp_path / "repo")
