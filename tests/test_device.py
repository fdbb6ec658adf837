"""Where `nuwa` computes: `--device auto|cpu|cuda|cuda:N|mps` on every command that computes,
bf16 autocast only on CUDA, and a device the machine does not have is one line with exit 2.

The CUDA cases run on a CPU-only machine: a CUDA-less environment is this one with
CUDA_VISIBLE_DEVICES empty; a machine with one GPU is torch's CUDA queries answering so.
What a real GPU computes is checked by scripts/gpu_check.sh, which CI (no GPU) does not run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import nuwa
from nuwa.cli import build_parser
from nuwa.device import Runtime, autocast, check_spec, current, use
from nuwa.errors import NuwaError

REPO = Path(__file__).resolve().parents[1]
COMPUTING = ("pretrain", "derive", "fit-gmm", "prepare", "finetune", "eval", "bench")


def cli_without_cuda(*args: object) -> subprocess.CompletedProcess:
    """`nuwa ARGS` in a process that sees no CUDA device (and, on Linux, no MPS either)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "nuwa.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    """torch's CUDA queries as on a machine with exactly one GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_device_specs_nuwa_knows(spec):
    assert check_spec(spec) == spec


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "", "tpu"])
def test_a_malformed_device_is_refused_naming_it(spec):
    with pytest.raises(NuwaError, match=f"--device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps"):
        check_spec(spec)


def test_auto_is_the_cpu_where_there_is_no_accelerator(no_accelerator):
    assert Runtime().resolve() == torch.device("cpu")
    assert Runtime(device="cpu").resolve() == torch.device("cpu")


def test_auto_prefers_cuda(one_gpu):
    assert Runtime().resolve() == torch.device("cuda", 0)
    assert Runtime(device="cuda").resolve() == torch.device("cuda", 0)
    assert Runtime(device="cuda:0").resolve() == torch.device("cuda", 0)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "mps"])
def test_a_missing_accelerator_is_one_line(no_accelerator, spec):
    with pytest.raises(NuwaError, match=f"--device {spec}: this machine has no"):
        Runtime(device=spec).resolve()


def test_a_gpu_index_past_the_machines_gpus_names_those_it_has(one_gpu):
    with pytest.raises(NuwaError, match=r"--device cuda:7: this machine has 1 CUDA device \(cuda:0\)"):
        Runtime(device="cuda:7").resolve()


def test_workers_must_be_a_count():
    with pytest.raises(NuwaError, match="--workers -1"):
        Runtime(workers=-1)
    assert Runtime(workers=0).workers == 0


def test_every_computing_command_takes_the_runtime_flags():
    parser = build_parser()
    for command in COMPUTING:
        argv = [command, "--device", "cpu"]
        sub = parser._subparsers._group_actions[0].choices[command]  # the command's own parser
        flags = {a for action in sub._actions for a in action.option_strings}
        assert "--device" in flags, command
        if command != "bench":  # bench only times a model where it is told
            assert {"--amp", "--no-amp", "--deterministic", "--workers"} <= flags, command
        assert sub.get_default("device") == "auto" or any(a.dest == "device" and a.default == "auto"
                                                          for a in sub._actions), argv


def test_use_sets_the_runtime_for_its_block_only():
    outer = current()
    with use(Runtime(device="cpu", amp=False, workers=0)) as device:
        assert device == torch.device("cpu")
        assert current() == Runtime(device="cpu", amp=False, workers=0)
    assert current() == outer


def test_autocast_changes_nothing_on_the_cpu():
    """bf16 autocast is for CUDA: on the CPU a model computes in float32 with amp on or off."""
    torch.manual_seed(0)
    model = nuwa.EdgeViT(nuwa.EdgeViTConfig.uniform(img_size=(8, 8), patch_size=4, in_chans=3, num_classes=3,
                                                    embed_dim=16, depth=2, num_heads=2)).eval()
    x = torch.randn(4, 3, 8, 8)
    outs = []
    for amp in (True, False):
        with use(Runtime(device="cpu", amp=amp)) as device, autocast(device), torch.no_grad():
            outs.append(model(x))
    assert outs[0].dtype == torch.float32
    assert torch.equal(outs[0], outs[1])


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the context is only built, not entered
def test_autocast_is_bf16_on_cuda_when_amp_is_on():
    with use(Runtime(device="cpu", amp=True)):
        ctx = autocast(torch.device("cuda", 0))
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    with use(Runtime(device="cpu", amp=False)):
        assert not isinstance(autocast(torch.device("cuda", 0)), torch.autocast)


def _args(command: str, base_dir: Path, npz: str, out: Path) -> list:
    args = {
        "derive": ["--model", base_dir, "--data", npz, "--classes", "0,1", "--rate", "0.5", "--recovery", "none"],
        "finetune": ["--model", base_dir, "--data", npz],
        "prepare": ["--model", base_dir, "--data", npz],
        "eval": ["--model", base_dir, "--data", npz],
        "pretrain": ["--model", "deit_tiny_patch16_224", "--data", npz, "--epochs", "0"],
        "fit-gmm": ["--model", base_dir, "--data", npz, "--classes", "0,1"],
        "bench": ["--model", base_dir],
    }[command]
    return args + ([] if command in ("prepare", "eval", "bench") else ["--out", out])


@pytest.mark.parametrize("command", COMPUTING)
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_missing_device_is_one_line_exit_2_and_nothing_written(no_accelerator, capfd, tmp_path, base_dir, npz,
                                                                 command, device):
    from nuwa.cli import main

    out = tmp_path / "out"
    before = sorted(p.name for p in Path(base_dir).iterdir())
    capfd.readouterr()
    code = main([command, *map(str, _args(command, base_dir, npz, out)), "--device", device])
    kind = "MPS" if device == "mps" else "CUDA"
    query = "torch.backends.mps.is_available()" if device == "mps" else "torch.cuda.is_available()"
    assert code == 2
    assert capfd.readouterr().err.strip().splitlines() == [
        f"nuwa {command}: error: --device {device}: this machine has no {kind} device ({query} is False)"]
    assert not out.exists() and not list(tmp_path.glob(".*"))  # no temporary leftovers either
    assert sorted(p.name for p in Path(base_dir).iterdir()) == before  # prepare wrote no cache


def test_cuda_in_a_process_that_sees_no_gpu(tmp_path, base_dir, npz):
    """The same in a real CUDA-less environment (CUDA_VISIBLE_DEVICES empty), as a shell sees it."""
    out = tmp_path / "out"
    r = cli_without_cuda("derive", *_args("derive", base_dir, npz, out), "--device", "cuda")
    assert r.returncode == 2
    assert r.stderr.strip() == ("nuwa derive: error: --device cuda: this machine has no CUDA device "
                                "(torch.cuda.is_available() is False)")
    assert not out.exists()


def test_a_malformed_device_is_refused_before_torch_loads():
    r = cli_without_cuda("derive", "--model", "m", "--data", "d", "--classes", "0", "--rate", "0.5",
                         "--device", "gpu", "--out", "x")
    assert r.returncode == 2
    assert r.stderr.strip() == "nuwa derive: error: --device 'gpu': expected one of auto, cpu, cuda, cuda:N, mps"


def test_eval_on_an_explicit_cpu_equals_the_default(base_dir, npz, capsys):
    from nuwa.cli import main

    results = []
    for extra in ([], ["--device", "cpu", "--no-amp", "--workers", "0"]):
        assert main(["eval", "--model", str(base_dir), "--data", npz, *extra]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0] == results[1]


# ---- the workflow: which device a job gets ---------------------------------------------------------
class _Resources(dict):
    pass


def _job(config: dict, gpu: int = 0) -> SimpleNamespace:
    return SimpleNamespace(config=config, resources=_Resources(gpu=gpu))


def _job_device():
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    try:
        from _common import job_device
    finally:
        sys.path.pop(0)
    return job_device


def test_a_job_computes_where_its_profile_says():
    job_device = _job_device()
    config = dict(profile="p", profiles=dict(p=dict(device="cpu")))
    assert job_device(_job(config)) == "cpu"
    config["profiles"]["p"]["device"] = "cuda:1"
    assert job_device(_job(config)) == "cuda:1"


def test_a_job_whose_rule_has_a_gpu_computes_on_cuda():
    job_device = _job_device()
    assert job_device(_job(dict(profile="p", profiles=dict(p=dict(device="cpu"))), gpu=1)) == "cuda"


def test_config_device_overrides_rule_and_profile():
    job_device = _job_device()
    config = dict(profile="p", device="cpu", profiles=dict(p=dict(device="cuda")))
    assert job_device(_job(config, gpu=1)) == "cpu"


def test_params_profiles_name_their_device():
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["profiles"]["default"]["device"] == "cpu"  # the committed results' device
    paper = params["profiles"]["paper"]
    gpu_rules = {rule for rule, r in paper["resources"].items() if r.get("gpu", 0) > 0}
    assert {"pretrain", "derive", "finetune"} <= gpu_rules  # these jobs get cuda (job_device)
