"""Bad input everywhere: every case is one line naming the value, exit status 2,
and nothing half-written. Derive's own cases (rates, classes, methods, latency budgets, options)
are in test_derive.py; params.yaml's in test_workflow.py. These cover the other commands and the
data and model files themselves.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nuwa
from nuwa.arch import EdgeViTConfig

pytestmark = pytest.mark.filterwarnings("ignore")


def cli(*args: object) -> subprocess.CompletedProcess:
    """`nuwa ARGS` in its own process (the contract as a shell sees it)."""
    return subprocess.run([sys.executable, "-m", "nuwa.cli", *map(str, args)], capture_output=True, text=True)


def cli_in_process(capfd, *args: object) -> tuple[int, str]:
    """`nuwa ARGS` in this process: `python -m nuwa.cli` is `sys.exit(main())`, so (exit status,
    stderr) are the command's, without a new interpreter's imports per case. capfd: what is
    written at the file-descriptor level counts too."""
    from nuwa.cli import main

    capfd.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capfd.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Broken data sets and model directories, each broken in one way."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 3, 20)
    out = {}
    out["npz_missing"] = d / "missing.npz"
    np.savez(out["npz_missing"], x_train=x, y_train=y)  # no x_test / y_test
    out["npz_lengths"] = d / "lengths.npz"
    np.savez(out["npz_lengths"], x_train=x, y_train=y[:5], x_test=x, y_test=y)
    out["npz_ndim"] = d / "ndim.npz"
    np.savez(out["npz_ndim"], x_train=x.reshape(20, 64), y_train=y, x_test=x.reshape(20, 64), y_test=y)
    out["npz_float"] = d / "float.npz"
    np.savez(out["npz_float"], x_train=x.astype(np.float32), y_train=y, x_test=x, y_test=y)
    out["npz_corrupt"] = d / "corrupt.npz"
    out["npz_corrupt"].write_bytes(b"PK\x03\x04 not really a zip archive")
    out["empty_dir"] = d / "empty"
    out["empty_dir"].mkdir()
    corrupt = d / "corrupt_images" / "train" / "cat"
    corrupt.mkdir(parents=True)
    for i in range(3):
        (corrupt / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    out["corrupt_images"] = d / "corrupt_images"
    idx = d / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x10")  # a header and no pixels
    out["idx_truncated"] = idx
    out["good_npz"] = d / "good.npz"
    np.savez(out["good_npz"], x_train=x, y_train=y, x_test=x, y_test=y)
    # Model directories: a good tiny one, then copies broken in one way each.
    cfg = EdgeViTConfig.uniform(depth=2, embed_dim=16, num_heads=2, mlp_ratio=2.0, num_classes=3, img_size=8,
                                patch_size=4, in_chans=1, mean=(0.5,), std=(0.5,))
    good = d / "model"
    nuwa.save(nuwa.EdgeViT(cfg), good)
    out["model"] = good
    for name, damage in (("truncated", lambda m: (m / "model.safetensors").write_bytes(
            (m / "model.safetensors").read_bytes()[:200])),
                         ("no_weights", lambda m: (m / "model.safetensors").unlink()),
                         ("bad_config", lambda m: (m / "config.json").write_text("{not json")),
                         ("mismatch", lambda m: (m / "config.json").write_text(
                             (m / "config.json").read_text().replace('"embed_dim": 16', '"embed_dim": 24')))):
        m = d / f"model_{name}"
        nuwa.save(nuwa.EdgeViT(cfg), m)
        damage(m)
        out[f"model_{name}"] = m
    return out


# (case id, argv with {placeholders} for the fixture's files and {out}, what the error line must name)
CASES = [
    ("unknown timm model", ["pretrain", "--model", "deit_tinny_patch16_224", "--data", "npz:{good_npz}"], "deit_tinny_patch16_224"),
    ("non-ViT timm model", ["pretrain", "--model", "resnet18", "--data", "npz:{good_npz}"], "resnet18"),
    ("negative epochs", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}", "--epochs", "-1"], "-1"),
    ("zero batch size", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}", "--batch-size", "0"], "0"),
    ("NaN learning rate", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}", "--lr", "nan"], "nan"),
    ("unknown data kind", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "mnist-ish:/x"], "mnist-ish"),
    ("missing npz file", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:/nonexistent/data.npz"], "/nonexistent/data.npz"),
    ("npz without test arrays", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{npz_missing}"], "x_test"),
    ("npz with mismatched lengths", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{npz_lengths}"], "y_train"),
    ("npz images without height and width", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{npz_ndim}"], "ndim"),
    ("npz float images", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{npz_float}"], "uint8"),
    ("corrupt npz archive", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{npz_corrupt}"], "corrupt.npz"),
    ("empty data folder", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "folder:{empty_dir}"], "empty"),
    ("only corrupt images", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "folder:{corrupt_images}"], "unreadable"),
    ("truncated IDX files", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "fashion-mnist:{idx_truncated}"], "idx"),
    ("output under a file", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}", "--epochs", "0",
                             "--out", "{good_npz}/base"], "good.npz"),
    ("eval: missing model", ["eval", "--model", "/nonexistent/model", "--data", "npz:{good_npz}"], "/nonexistent/model"),
    ("eval: truncated weights", ["eval", "--model", "{model_truncated}", "--data", "npz:{good_npz}"], "model.safetensors"),
    ("eval: no weights", ["eval", "--model", "{model_no_weights}", "--data", "npz:{good_npz}"], "model.safetensors"),
    ("eval: corrupt config", ["eval", "--model", "{model_bad_config}", "--data", "npz:{good_npz}"], "config.json"),
    ("eval: weights of another shape", ["eval", "--model", "{model_mismatch}", "--data", "npz:{good_npz}"], "shape"),
    ("eval: unknown split", ["eval", "--model", "{model}", "--data", "npz:{good_npz}", "--split", "holdout"], "holdout"),
    ("eval: unknown class", ["eval", "--model", "{model}", "--data", "npz:{good_npz}", "--classes", "7"], "7"),
    ("info: missing model", ["info", "/nonexistent/model"], "/nonexistent/model"),
    ("info: corrupt config", ["info", "{model_bad_config}"], "config.json"),
    ("export: truncated weights", ["export", "--model", "{model_truncated}", "--onnx", "{out}/m.onnx"], "model.safetensors"),
    ("finetune: negative epochs", ["finetune", "--model", "{model}", "--data", "npz:{good_npz}", "--epochs", "-2"], "-2"),
    ("prepare: missing model", ["prepare", "--model", "/nonexistent/model", "--data", "npz:{good_npz}"], "/nonexistent/model"),
    ("prepare: negative seed", ["prepare", "--model", "{model}", "--data", "npz:{good_npz}", "--seed", "-1"], "--seed -1"),
    ("pretrain: negative probe epochs", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}",
                                         "--probe-epochs", "-1"], "-1"),
    ("pretrain: zero probe limit", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}",
                                    "--probe-epochs", "2", "--probe-limit", "0"], "--probe-limit"),
    ("pretrain: zero probe lr", ["pretrain", "--model", "deit_tiny_patch16_224", "--data", "npz:{good_npz}",
                                 "--probe-epochs", "2", "--probe-lr", "0"], "--probe-lr 0"),
    ("eval: per-image of an ONNX file", ["eval", "--onnx", "{out}/m.onnx", "--data", "npz:{good_npz}", "--per-image"],
     "--per-image"),
]


def _argv(files, tmp_path, argv):
    fill = dict({k: str(v) for k, v in files.items()}, out=str(tmp_path))
    argv = [a.format(**fill) for a in argv]
    if argv[0] in ("pretrain", "finetune") and "--out" not in argv:
        argv += ["--out", str(tmp_path / "model")]
    return argv, fill


def _assert_one_line_exit_2_nothing_written(code, stderr, needle, tmp_path):
    assert code == 2, (code, stderr[-2000:])
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert needle.lower() in lines[-1].lower(), lines[-1]
    assert list(tmp_path.iterdir()) == [], "nothing half-written"


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(files, tmp_path, capfd, argv, needle):
    argv, fill = _argv(files, tmp_path, argv)
    code, stderr = cli_in_process(capfd, *argv)
    _assert_one_line_exit_2_nothing_written(code, stderr, needle.format(**fill), tmp_path)


SHELL_CASES = ("corrupt npz archive", "eval: truncated weights", "negative epochs")


@pytest.mark.parametrize("argv, needle", [c[1:] for c in CASES if c[0] in SHELL_CASES],
                         ids=[c[0] for c in CASES if c[0] in SHELL_CASES])
def test_bad_input_from_a_shell_is_one_line_exit_2_and_nothing_written(files, tmp_path, argv, needle):
    """The same contract from a separate `python -m nuwa.cli` process: a broken data file, a broken
    model file, a bad value."""
    argv, fill = _argv(files, tmp_path, argv)
    r = cli(*argv)
    _assert_one_line_exit_2_nothing_written(r.returncode, r.stderr, needle.format(**fill), tmp_path)


def test_there_are_at_least_thirty_bad_inputs_across_the_suites():
    from tests import test_derive  # noqa: F401  (its BAD table)

    assert len(CASES) + len(test_derive.BAD) >= 30
