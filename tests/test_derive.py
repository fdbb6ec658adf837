"""End to end on a tiny npz data set the test writes: pretrain -> derive -> eval -> load, and bad input."""
import json
from pathlib import Path
import subprocess
import sys

import pytest
import torch

import nuwa
from nuwa.options import RATE_TOLERANCE, DeriveOptions
from nuwa.derivation import derive
from nuwa.schedule import AdaptiveOptions

from .conftest import BASE_EPOCHS, CLASSES, write_blobs  # noqa: F401  (re-exported: other modules import them here)
# The blob data set `npz` and its base `base_dir` are session fixtures (tests/conftest.py).


def _cli(*args, **kw):
    """`nuwa ARGS` in its own process (the contract as a shell sees it)."""
    return subprocess.run([sys.executable, "-m", "nuwa.cli", *map(str, args)], capture_output=True, text=True, **kw)


def _main(capfd, *args) -> tuple[int, str, str]:
    """`nuwa ARGS` in this process: `python -m nuwa.cli` is `sys.exit(main())`, so (exit status,
    stdout, stderr) are the command's, without paying a new interpreter's torch import per case.
    capfd: what the command writes at the file-descriptor level is seen too."""
    from nuwa.cli import main

    capfd.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


FAST = dict(score_samples=64, embed_score_samples=128, layer_head_samples=512, layer_head_epochs=10, batch_size=32)


def test_pretrained_base_is_a_loadable_model_directory(base_dir):
    model = nuwa.load(base_dir)
    assert model.config.class_names == CLASSES and model.config.in_chans == 1
    report = json.loads((base_dir / "report.json").read_text())
    assert report["kind"] == "base" and len(report["history"]["epochs"]) == BASE_EPOCHS


@pytest.mark.slow
def test_derive_eval_load_round_trip(base_dir, npz, tmp_path, capfd):
    out = tmp_path / "edge"
    r = _cli("derive", "--model", base_dir, "--data", npz, "--classes", "north,east,centre", "--rate", "0.5",
             "--metric", "flops", "--score-samples", "64", "--batch-size", "32", "--seed", "0",
             # the default recovery (standard) on a small budget
             "--recovery-round", "64", "--recovery-max-samples", "192", "--recovery-search-samples", "32", "--out", out)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    for key in ("method", "rate_target", "metric", "params", "flops", "base_params", "base_flops", "rate_achieved",
                "layers", "classes", "seconds", "weights_sha256"):
        assert key in report, key
    assert report["classes"] == [0, 2, 4] and report["class_names"] == ["north", "east", "centre"]
    assert report["rate_achieved"] >= 0.5 and summary["rate_achieved"] == report["rate_achieved"]
    assert {"load", "data", "importance", "adaptive", "recovery"} <= set(report["seconds"])
    assert report["recovery"] == "standard" and report["recovery_params"]["max_samples"] == 192
    assert len(report["recovery_details"]["candidates"]) == 4  # 3 lrs, then 1 more distillation weight
    edge = nuwa.load(out)
    assert edge.config.num_classes == 3 and edge.config.classes == [0, 2, 4]
    assert nuwa.count_flops(edge) <= 0.5 * report["base_flops"]
    r = _cli("eval", "--model", out, "--data", npz)
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["class_names"] == ["north", "east", "centre"] and ev["n"] > 0 and 0 <= ev["top1"] <= 1
    code, stdout, _ = _main(capfd, "eval", "--model", base_dir, "--data", npz, "--classes", "north,east,centre")
    base_ev = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and base_ev["n"] == ev["n"] and base_ev["top1_sliced"] >= base_ev["top1"] - 1e-9


@pytest.mark.parametrize("metric", ["params", "flops"])
@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.6, 0.8])
def test_achieved_rate_is_at_least_alpha_and_close_to_it(base_dir, npz, metric, alpha):
    # The default depth policy; on this 48-dim model one rounding step of 8 embedding dims is 17 %
    # of the cost, so sizes are exact here (test_schedule checks rounding on a 96-dim model).
    opts = DeriveOptions(adaptive=AdaptiveOptions(round_to=1), **FAST)
    model, report = derive(base_dir, npz, classes=[0, 2, 4], rate=alpha, metric=metric, recovery="none",
                           options=opts)
    assert alpha <= report["rate_achieved"] <= alpha + RATE_TOLERANCE, report["rate_achieved"]
    assert report["rate_note"] is None
    assert report["rate_achieved"] == pytest.approx(
        1 - nuwa.cost.cost(model, metric) / nuwa.cost.cost(nuwa.load(base_dir), metric))


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_the_default_depth_policy_lands_the_requested_rate(base_dir, npz, alpha):
    # rho_depth 0.5: the paper's rule alone keeps far fewer layers than a small alpha asks for.
    opts = DeriveOptions(rho_depth=0.5, adaptive=AdaptiveOptions(round_to=1), **FAST)
    _, report = derive(base_dir, npz, classes=[0, 2, 4], rate=alpha, recovery="none", options=opts)
    d = report["details"]
    assert d["depth_policy"] == "budget" and d["depth"] >= d["depth_rule"]
    assert d["rate_after_depth"] < alpha or d["depth"] == 4  # depth alone never reaches the request
    assert alpha <= report["rate_achieved"] <= alpha + RATE_TOLERANCE and report["rate_note"] is None


def test_the_budget_policy_brings_dropped_heads_back_best_first_until_the_request_is_met():
    from nuwa.methods.nuwa import restore_heads

    scores = [torch.tensor([0.9, 0.1, 0.05]), torch.tensor([0.2, 0.8])]
    at_most_two = lambda keep: sum(map(len, keep)) <= 2  # noqa: E731  (within budget: 2 heads or fewer)
    assert restore_heads([[0], [1]], scores, at_most_two) == [[0], [0, 1]]  # 0.2 before 0.1, then over
    assert restore_heads([[0, 1], [0, 1]], scores, at_most_two) == [[0, 1], [0, 1]]  # already over: as is
    assert restore_heads([[0], [1]], scores, lambda keep: True) == [[0, 1, 2], [0, 1]]  # everything fits


def test_the_accuracy_policy_may_overshoot_and_the_report_says_why(base_dir, npz, capfd, tmp_path):
    code, out, err = _main(capfd, "derive", "--model", base_dir, "--data", npz, "--classes", "0,2,4", "--rate", "0.2",
                           "--rho-depth", "0.5", "--depth-policy", "accuracy", "--recovery", "none",
                           "--score-samples", "64", "--batch-size", "32", "--out", tmp_path / "edge")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rate_achieved"] > 0.2 + RATE_TOLERANCE, summary  # one or two of 4 layers kept
    assert "accuracy depth policy keeps" in summary["rate_note"] and "note: rate" in err


@pytest.mark.slow
def test_same_seed_same_model(base_dir, npz):
    opts = DeriveOptions(**FAST)
    a, ra = derive(base_dir, npz, classes="north,south,west", rate=0.4, recovery="finetune", finetune_epochs=1, seed=3,
                   options=opts)
    b, rb = derive(base_dir, npz, classes="north,south,west", rate=0.4, recovery="finetune", finetune_epochs=1, seed=3,
                   options=opts)
    assert ra["val_top1"] == rb["val_top1"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_seed_changes_the_fit_validation_split_and_keeps_its_own_caches(base_dir, npz, tmp_path):
    from nuwa.task import open_base_data

    base = nuwa.load(base_dir)
    val = {s: set(open_base_data(npz, base, opts=DeriveOptions().for_seed(s)).val_all.indices.tolist()) for s in (0, 1)}
    assert len(val[0]) == len(val[1]) and val[0] != val[1]
    _, report = derive(base_dir, npz, classes=[1, 3], rate=0.3, recovery="none", seed=1, options=DeriveOptions(**FAST),
                       out=tmp_path / "s1")
    assert report["options"]["split_seed"] == 1
    assert (base_dir / "layer_heads.split1.safetensors").is_file() and (base_dir / "embed_scores.split1.safetensors").is_file()
    # Fine-tuning the derived model keeps the derivation's split whatever its own seed.
    _, tuned = nuwa.derivation.finetune_dir(tmp_path / "s1", npz, epochs=1, seed=5, out=tmp_path / "tuned",
                                            options=DeriveOptions(**FAST), recovery="finetune")
    assert tuned["val_loss_before_recovery"] == report["val_loss"]  # the same validation images
    # A pinned split is the same for every seed.
    assert DeriveOptions(split_seed=0).for_seed(7).split() == 0


def test_per_base_artefacts_are_cached_next_to_the_base(base_dir, npz):
    derive(base_dir, npz, classes=[1, 3], rate=0.3, recovery="none", options=DeriveOptions(**FAST))
    assert (base_dir / "layer_heads.safetensors").is_file()
    assert (base_dir / "embed_scores.safetensors").is_file()
    _, report = derive(base_dir, npz, classes=[1, 5], rate=0.3, recovery="none", options=DeriveOptions(**FAST))
    assert report["details"]["passes"] == FAST["score_samples"]  # embedding scores were not recomputed


@pytest.mark.unloaded
def test_latency_budget(base_dir, npz):
    # Batch 256: at smaller batches a model this small is mostly framework overhead, and its
    # smallest adaptive candidate runs at ~75% of the base (measured at batch 64), so a 0.7 budget
    # passed or failed by timing noise; at 256 the smallest runs at ~30%.
    base_ms = nuwa.bench.measure_latency(nuwa.load(base_dir), batch_size=256, repeats=20)["latency_ms_median"]
    model, report = derive(base_dir, npz, classes=[0, 1, 2], latency_ms=base_ms * 0.6, recovery="none",
                           options=DeriveOptions(prune_depth=False, latency_batch=256, **FAST))
    assert report["metric"] == "latency" and report["latency"]["latency_ms_median"] > 0
    assert nuwa.count_flops(model) < nuwa.count_flops(nuwa.load(base_dir))


BAD = [
    (["--rate", "0"], "rate 0.0"),
    (["--rate", "1"], "rate 1.0"),
    (["--rate", "-0.2"], "rate -0.2"),
    (["--rate", "nan"], "rate nan"),
    (["--rate", "abc"], "'abc'"),
    (["--rate", "0.5", "--classes", "north,sotuh"], "did you mean 'south'"),
    (["--rate", "0.5", "--classes", "0,9"], "9"),
    (["--rate", "0.5", "--classes", "north"], "north"),
    (["--rate", "0.5", "--classes", "north,north"], "north"),
    (["--rate", "0.5", "--subtask", "H9"], "H9"),
    (["--rate", "0.5", "--metric", "macs"], "macs"),
    (["--rate", "0.5", "--method", "magic"], "magic"),
    (["--rate", "0.5", "--depth-policy", "fast"], "'fast'"),
    (["--rate", "0.5", "--split-seed", "-1"], "'-1' must be >= 0"),
    (["--rate", "0.5", "--recovery", "prayer"], "prayer"),
    (["--rate", "0.5", "--finetune-epochs", "-1"], "-1"),
    (["--latency-ms", "0"], "latency budget 0.0"),
    (["--latency-ms", "0.0001"], "unreachable"),
    (["--rate", "0.5", "--data", "npz:/nonexistent.npz"], "/nonexistent.npz"),
    (["--rate", "0.5", "--model", "/nonexistent/base"], "/nonexistent/base"),
    (["--rate", "0.5", "--model", "resnet18"], "resnet18"),
]


def _bad_derive_argv(base_dir, npz, out, extra):
    args = {"--model": str(base_dir), "--data": npz, "--classes": "north,east", "--finetune-epochs": "0"}
    flags = dict(zip(extra[::2], extra[1::2]))
    if "--subtask" in flags:
        args.pop("--classes")
    args.update(flags)
    return ["derive", *[t for kv in args.items() for t in kv], "--score-samples", "16", "--out", str(out)]


def _assert_one_error_line(code, stderr, needle):
    assert code == 2, stderr
    # Progress bars may precede it on stderr; the error itself is one line, the last, no traceback.
    errors = [l for l in stderr.splitlines() if "error:" in l]
    assert len(errors) == 1 and needle in errors[0] and stderr.strip().endswith(errors[0]), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("extra, needle", BAD, ids=[b[1] for b in BAD])
def test_bad_derive_input_is_one_line_exit_2_and_no_output(base_dir, npz, tmp_path, capfd, extra, needle):
    out = tmp_path / "edge"
    code, _, err = _main(capfd, *_bad_derive_argv(base_dir, npz, out, extra))
    _assert_one_error_line(code, err, needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, needle", [BAD[4], BAD[5]], ids=[BAD[4][1], BAD[5][1]])
def test_bad_derive_input_from_a_shell_is_one_line_exit_2_and_no_output(base_dir, npz, tmp_path, extra, needle):
    """The same contract from a separate `python -m nuwa.cli` process, for an error of the argument
    parser (not a number) and one of derive's own checks (a misspelt class)."""
    out = tmp_path / "edge"
    r = _cli(*_bad_derive_argv(base_dir, npz, out, extra))
    _assert_one_error_line(r.returncode, r.stderr, needle)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--rho-depth", "1.5"], "rho_depth=1.5"),
        (["--rho-head", "0"], "rho_head=0.0"),
        (["--gamma-qkv", "2"], "gamma_qkv=2.0"),
        (["--exclude", "qk,depth"], "depth"),
        (["--val-fraction", "1"], "val_fraction=1.0"),
        (["--round-to", "0"], "'0'"),
    ],
)
def test_bad_derive_options(base_dir, npz, tmp_path, capfd, flags, needle):
    out = tmp_path / "edge"
    code, _, err = _main(capfd, "derive", "--model", base_dir, "--data", npz, "--classes", "north,east", "--rate",
                         "0.5", *flags, "--out", out)
    assert code == 2 and needle in err.strip().splitlines()[-1], err
    assert not out.exists()


def test_a_bad_option_in_the_options_file_is_named(base_dir, npz, tmp_path, capfd):
    opts = tmp_path / "options.yaml"
    opts.write_text("latency_margin: 1.5\n")
    out = tmp_path / "edge"
    code, _, err = _main(capfd, "derive", "--model", base_dir, "--data", npz, "--classes", "north,east",
                         "--latency-ms", "5", "--options", opts, "--out", out)
    assert code == 2 and "latency_margin=1.5" in err.strip().splitlines()[-1], err
    assert not out.exists()


def test_prepare_builds_the_per_base_caches(base_dir, npz, capfd):
    code, out, err = _main(capfd, "prepare", "--model", base_dir, "--data", npz)
    assert code == 0, err
    paths = json.loads(out.strip().splitlines()[-1])
    assert all(Path(p).is_file() for p in paths.values())


def test_finetune_as_its_own_step_equals_derive_with_recovery(base_dir, npz, tmp_path, capfd):
    """derive --recovery none, then finetune, gives the same weights as derive --recovery finetune."""
    common = ["--model", base_dir, "--data", npz, "--classes", "south,west", "--rate", "0.5",
              "--score-samples", "32", "--batch-size", "32", "--seed", "1"]
    assert _main(capfd, "derive", *common, "--recovery", "none", "--out", tmp_path / "pruned")[0] == 0
    code, _, err = _main(capfd, "finetune", "--model", tmp_path / "pruned", "--data", npz, "--recovery", "finetune",
                         "--epochs", "1", "--seed", "1", "--options", _options_file(tmp_path), "--out", tmp_path / "tuned")
    assert code == 0, err
    assert _main(capfd, "derive", *common, "--recovery", "finetune", "--finetune-epochs", "1",
                 "--out", tmp_path / "direct")[0] == 0
    a, b = nuwa.load(tmp_path / "tuned"), nuwa.load(tmp_path / "direct")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert json.loads((tmp_path / "tuned" / "report.json").read_text())["finetune_epochs"] == 1


def _options_file(tmp_path):
    f = tmp_path / "opts.yaml"
    f.write_text("batch_size: 32\n")
    return f


def test_finetune_refuses_a_base_model(base_dir, npz, tmp_path, capfd):
    code, _, err = _main(capfd, "finetune", "--model", base_dir, "--data", npz, "--out", tmp_path / "x")
    assert code == 2 and "base model" in err and not (tmp_path / "x").exists()


class _AtMostLayers:
    """A budget only models of at most `depth` layers meet, whatever their widths (as a latency
    budget of a model whose time goes to per-layer overhead can be)."""

    rate, metric, latency_ms = None, None, 1.0

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __call__(self, config, build) -> bool:
        return config.depth <= self.depth


def test_the_budget_policy_steps_depth_back_when_the_widths_cannot_reach_the_budget(base_dir, npz):
    from nuwa.base import load_base
    from nuwa.derivation import PhaseTimer
    from nuwa.methods.nuwa import derive_nuwa
    from nuwa.task import open_subtask

    opts = DeriveOptions(rho_depth=0.5, **FAST).for_seed(0)
    base, where = load_base(base_dir)
    task = open_subtask(npz, base, [0, 2, 4], opts=opts)
    # The rule keeps 1 layer; the budget policy brings layers back while the cut model fits
    # (<= 2 layers), so it proposes 3, which no width can bring within the budget.
    pruned, info = derive_nuwa(base, where, task, _AtMostLayers(2), opts, PhaseTimer(), 0)
    assert info["depth_rule"] == 1 and info["depth_fallback"] == [3] and pruned.config.depth == 2
