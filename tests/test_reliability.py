"""A killed job never leaves an output that looks complete; the same seed gives the same bytes."""
import signal
import subprocess
import sys
import time

import pytest

import nuwa
from nuwa import io

# `npz` and `base_dir` (a tiny data set and its base) are session fixtures (tests/conftest.py).


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "nuwa.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _absent_or_complete(out, parent):
    if out.exists():
        nuwa.load(out)  # complete and loadable, or this raises
        assert (out / "report.json").is_file()
    # no temporary left that a later run could mistake for a result (temporaries are dot-files)
    assert all(p.name.startswith(".") or p == out for p in parent.iterdir())


@pytest.mark.slow
@pytest.mark.unloaded  # the delays aim at phases of an unloaded run
@pytest.mark.parametrize("delay", [0.5, 2.0, 3.5, 5.0, 6.5, 8.0])
def test_sigkill_during_pretrain_leaves_nothing_half_written(npz, tmp_path, delay):
    out = tmp_path / "base"
    p = _start("pretrain", "--model", "deit_tiny_patch16_224", "--data", npz, "--patch-size", "7", "--embed-dim",
               "32", "--depth", "2", "--num-heads", "2", "--epochs", "2", "--batch-size", "64", "--out", out)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    _absent_or_complete(out, tmp_path)


@pytest.mark.slow
@pytest.mark.unloaded
@pytest.mark.parametrize("delay", [1.0, 3.0, 5.0, 7.0, 9.0])
def test_sigkill_during_derive_leaves_nothing_half_written(base_dir, npz, tmp_path, capfd, delay):
    from nuwa.cli import main

    out = tmp_path / "edge"
    p = _start("derive", "--model", base_dir, "--data", npz, "--classes", "north,south", "--rate", "0.5",
               "--finetune-epochs", "1", "--score-samples", "32", "--batch-size", "32", "--out", out)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    _absent_or_complete(out, tmp_path)
    # a re-run after the kill completes without manual clean-up (in this process: `python -m
    # nuwa.cli` is `sys.exit(main())`, and the killed process's leftovers are what it meets)
    code = main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,south", "--rate", "0.5",
                 "--finetune-epochs", "0", "--score-samples", "32", "--out", str(out)])
    assert code == 0, capfd.readouterr().err[-3000:]
    nuwa.load(out)


@pytest.mark.slow
def test_same_seed_pretrain_gives_byte_identical_weights(npz, tmp_path):
    args = ["pretrain", "--model", "deit_tiny_patch16_224", "--data", npz, "--patch-size", "7", "--embed-dim", "32",
            "--depth", "2", "--num-heads", "2", "--epochs", "1", "--batch-size", "64", "--seed", "5"]
    shas = []
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "nuwa.cli", *args, "--out", str(tmp_path / name)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        shas.append(io.sha256_file(tmp_path / name / "model.safetensors"))
    assert shas[0] == shas[1]


@pytest.mark.parametrize("method", ["nuwa", "random", "nvit", "xpruner"])
@pytest.mark.slow
def test_same_seed_derive_gives_byte_identical_weights_for_every_method(base_dir, npz, tmp_path, method):
    from nuwa.options import DeriveOptions
    from nuwa.derivation import derive

    opts = DeriveOptions(score_samples=32, batch_size=32, xpruner=dict(steps=5))
    for name in ("a", "b"):
        derive(base_dir, npz, classes=[0, 4], rate=0.5, method=method, recovery="finetune", finetune_epochs=1, seed=2,
               out=tmp_path / name, options=opts)
    assert io.sha256_file(tmp_path / "a" / "model.safetensors") == io.sha256_file(tmp_path / "b" / "model.safetensors")
    ra, rb = io.read_report(tmp_path / "a"), io.read_report(tmp_path / "b")
    assert ra["val_top1"] == rb["val_top1"] and ra["weights_sha256"] == rb["weights_sha256"]


@pytest.mark.slow
def test_commands_run_in_one_process_write_the_bytes_of_separate_processes(base_dir, npz, tmp_path):
    """The workflow runs a sweep (one derivation per alpha, then their fine-tuning) in one Python
    process (workflow/scripts/nuwa_run.py): nothing may carry over from one command to the next,
    and fine-tuning the same pruned model again gives the same bytes, which is why the workflow
    copies the fine-tuned model when two alphas give the same pruned one."""
    import contextlib
    import io as _io

    from nuwa.cli import main

    def derive(rate, out):  # NuWa's depth stage overshoots 0.3 on this base; NViT stops at the rate
        return ["derive", "--model", str(base_dir), "--data", npz, "--classes", "0,4", "--rate", str(rate),
                "--method", "nuwa" if rate == 0.3 else "nvit", "--recovery", "none", "--score-samples", "32", "--batch-size", "32", "--seed", "1", "--out", str(out)]

    def finetune(model, out):
        return ["finetune", "--model", str(model), "--data", npz, "--recovery", "finetune", "--epochs", "1", "--seed", "1",
                "--out", str(out)]

    for rate in (0.3, 0.6):
        for args in (derive(rate, tmp_path / f"apart-{rate}"), finetune(tmp_path / f"apart-{rate}", tmp_path / f"apart-ft-{rate}")):
            r = subprocess.run([sys.executable, "-m", "nuwa.cli", *args], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    with contextlib.redirect_stdout(_io.StringIO()), contextlib.redirect_stderr(_io.StringIO()):
        for rate in (0.3, 0.6):
            assert main(derive(rate, tmp_path / f"one-{rate}")) == 0
            assert main(finetune(tmp_path / f"one-{rate}", tmp_path / f"one-ft-{rate}")) == 0
        assert main(finetune(tmp_path / "one-0.3", tmp_path / "again-ft-0.3")) == 0
    sha = lambda name: io.sha256_file(tmp_path / name / "model.safetensors")  # noqa: E731
    for rate in (0.3, 0.6):
        assert sha(f"one-{rate}") == sha(f"apart-{rate}") and sha(f"one-ft-{rate}") == sha(f"apart-ft-{rate}")
    assert sha("again-ft-0.3") == sha("one-ft-0.3")
    assert sha("one-0.3") != sha("one-0.6")  # two different models: the comparison can fail
