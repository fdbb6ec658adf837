"""Recovery methods (nuwa.recovery): closed-form ridge refit and distillation, on a real tiny base."""
import copy
import dataclasses
import json

import numpy as np

import pytest
import torch

import nuwa
from nuwa.cli import main
from nuwa.options import DeriveOptions
from nuwa.derivation import derive
from nuwa.task import open_subtask
from nuwa.errors import NuwaError
from nuwa.recovery import RidgeStats, closed_form, recover, ridge_fit
from nuwa.evaluate import evaluate
from nuwa.data import MemoryDataset
from tests.test_derive import write_blobs

SUB = [0, 2, 4]
# Depth pruning off: on this easy task it alone meets the rate (one layer left), and then there
# is no width cut for a recovery to repair.
FAST = dict(prune_depth=False, score_samples=64, taylor_microbatch=16, embed_score_samples=128, batch_size=32,
            calib_samples=128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread beats two that spin-wait on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return f"npz:{write_blobs(tmp_path_factory.mktemp('data') / 'blobs.npz', seed=1, n_train=480, n_test=60)}"


@pytest.fixture(scope="module")
def base_dir(npz, tmp_path_factory):
    from nuwa.pretrain import pretrain

    out = tmp_path_factory.mktemp("models") / "base"
    pretrain("deit_tiny_patch16_224", npz, out=out, patch_size=7, embed_dim=48, depth=3, num_heads=3, epochs=4,
             batch_size=32, augment=False, seed=0)
    return out


@pytest.fixture(scope="module")
def pruned(base_dir, npz):
    """(pruned model with no recovery, base, sub-task): a hard cut, so there is something to recover."""
    opts = DeriveOptions(**FAST)
    model, report = derive(base_dir, npz, classes=SUB, rate=0.75, recovery="none", options=opts)
    assert report["finetune_epochs"] == 0 and report["recovery"] == "none"
    base = nuwa.load(base_dir)
    assert model.config.embed_index is not None  # the embedding was cut: targets must be sliced
    return model, base, open_subtask(npz, base, SUB, opts=opts)


def _val(model, task):
    return evaluate(model, task.val, preprocess=task.preprocess, desc=None)


def _recovered(pruned, recovery, seed=0, epochs=1, **options):
    model, base, task = pruned
    model = copy.deepcopy(model)
    history, params, details = recover(model, base, task, recovery=recovery, epochs=epochs,
                                       opts=DeriveOptions(**{**FAST, **options}), seed=seed)
    return model, history, params, details


# ---- the ridge solver -----------------------------------------------------------------------------
def test_ridge_recovers_a_known_linear_map_from_batches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 200, 7, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 10, 7, dtype=torch.float64)
    w = torch.randn(4, 7, generator=gen, dtype=torch.float64)  # float64 data: an exact map, no rounding noise
    b = torch.randn(4, generator=gen, dtype=torch.float64)
    y = x @ w.T + b
    stats = RidgeStats(7, 4)
    for xb, yb in zip(x, y):  # three batches, as calibration streams them
        stats.add(xb, yb)
    w_hat, b_hat = stats.solve(0.0)
    torch.testing.assert_close(w_hat, w, rtol=0, atol=1e-9)
    torch.testing.assert_close(b_hat, b, rtol=0, atol=1e-9)
    assert stats.unexplained(w_hat, b_hat) < 1e-12  # 1 - R^2: 0 for the exact map, 1 for the mean
    assert stats.unexplained(torch.zeros(4, 7), y.reshape(-1, 4).mean(0)) == pytest.approx(1)
    # One call on all rows is the same fit; a penalty shrinks the weight, never the bias's freedom.
    w_one, _ = ridge_fit(x.reshape(-1, 7), y.reshape(-1, 4), ridge=0.0)
    torch.testing.assert_close(w_one, w_hat)
    w_reg, _ = ridge_fit(x.reshape(-1, 7), y.reshape(-1, 4) + 100.0, ridge=1.0)
    assert w_reg.norm() < w.norm()
    w_nb, b_nb = ridge_fit(x.reshape(-1, 7), x.reshape(-1, 7) @ w.T, ridge=0.0, bias=False)
    assert b_nb is None and torch.allclose(w_nb, w, atol=1e-9)


# ---- closed form ----------------------------------------------------------------------------------
def test_closed_form_lowers_validation_loss_without_training(pruned):
    model, _, task = pruned
    before = _val(model, task)
    recovered, history, params, details = _recovered(pruned, "closed-form")
    after = _val(recovered, task)
    assert history is None and params == dict(ridge=1e-3, calib_samples=128)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["top1"] >= before["top1"]
    assert details["calib_images"] == 128 and len(details["fit_unexplained"]) == model.config.depth
    for layer in details["fit_unexplained"]:  # every refit explains its base target better than the cut
        for sub in ("attn", "mlp"):
            assert layer[sub][1] < layer[sub][0], layer
    for layer, kept in zip(details["val_unexplained"], details["kept"]):  # and so on held-out images
        assert all(layer[sub][1] < layer[sub][0] and kept[sub] in details["ridges"] for sub in ("attn", "mlp"))
    guard = details["guard"]
    assert guard["kept"] == "refit" and not guard["reverted"]
    assert guard["val_before"]["loss"] == before["loss"] and guard["val_refit"]["loss"] == after["loss"]
    # Only the output projections and the classifier move; the architecture is unchanged.
    changed = {k for k, v in recovered.state_dict().items() if not torch.equal(v, model.state_dict()[k])}
    assert changed and all(k.endswith(("attn.proj.weight", "attn.proj.bias", "mlp.fc2.weight", "mlp.fc2.bias",
                                       "head.weight", "head.bias")) for k in changed), changed
    assert recovered.config.layer_table() == model.config.layer_table()


def test_closed_form_is_deterministic_for_a_seed(pruned):
    a = _recovered(pruned, "closed-form", seed=3, calib_samples=64)[0]
    b = _recovered(pruned, "closed-form", seed=3, calib_samples=64)[0]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_closed_form_without_head_refit_keeps_the_classifier(pruned):
    model, base, task = pruned
    m = copy.deepcopy(model)
    info = closed_form(m, base, task.batches(task.fit, 64, seed=0, batch_size=32), ridge=1e-2, refit_head=False,
                       desc=None)
    assert "head" not in info and torch.equal(m.head.weight, model.head.weight)
    assert all(l["mlp"][1] < l["mlp"][0] for l in info["fit_unexplained"])
    with pytest.raises(NuwaError, match="ridge=-0.5"):
        closed_form(m, base, task.batches(task.fit, 8, seed=0, batch_size=8), ridge=-0.5, desc=None)


def _guarded_and_unguarded(pruned, calib, **options):
    """Closed-form recovery calibrated on `calib` instead of the fit images: through `recover`
    (guarded on the validation images) and by a bare `closed_form` (always refits)."""
    model, base, task = pruned
    opts = DeriveOptions(**{**FAST, **options})
    guarded = copy.deepcopy(model)
    _, _, details = recover(guarded, base, dataclasses.replace(task, fit=calib), recovery="closed-form", epochs=0,
                            opts=opts, seed=0)
    bare = copy.deepcopy(model)
    closed_form(bare, base, task.batches(calib, opts.calib_samples, seed=0, batch_size=32), ridge=opts.ridge,
                desc=None)
    return guarded, bare, details


def _same_weights(a, b):
    return all(torch.equal(va, vb) for va, vb in zip(a.state_dict().values(), b.state_dict().values()))


def test_closed_form_keeps_the_original_projections_when_calibration_is_unrepresentative(pruned):
    """Calibrated on black images, a refit learns nothing about the sub-task's images: a bare refit
    raises the validation loss; the guarded one finds every refit worse on held-out images than
    the projection it would replace and keeps all of them."""
    model, _, task = pruned
    black = MemoryDataset(torch.zeros(64, 1, 28, 28, dtype=torch.uint8), np.zeros(64), ["black"])
    guarded, bare, details = _guarded_and_unguarded(pruned, black, calib_samples=64)
    before = _val(model, task)
    assert _val(bare, task)["loss"] > before["loss"]  # the case does make a refit hurt
    assert _val(guarded, task)["loss"] <= before["loss"] and _same_weights(guarded, model)
    assert details["kept"] == [{"attn": "original", "mlp": "original"}] * model.config.depth
    assert details["head_kept"] == "original" and details["val_images"] == len(task.val)
    for layer in details["val_unexplained"]:  # kept weights: held-out error unchanged
        assert layer["attn"][0] == layer["attn"][1] and layer["mlp"][0] == layer["mlp"][1]
    guard = details["guard"]
    assert guard["kept"] == "pruned" and not guard["reverted"] and guard["val_refit"] == guard["val_before"]
    assert guard["val_before"] == dict(loss=before["loss"], top1=before["top1"])


def test_closed_form_reverts_the_whole_refit_when_it_raises_the_validation_loss(pruned):
    """On two calibration images some projections still look better on held-out images one at a
    time, but together they make the model worse: the whole refit is undone."""
    model, _, task = pruned
    guarded, bare, details = _guarded_and_unguarded(pruned, task.fit, calib_samples=2)
    before = _val(model, task)
    assert _val(bare, task)["loss"] > before["loss"]
    refit = [k for layer in details["kept"] for k in layer.values() if k != "original"]
    assert refit and set(refit) <= set(details["ridges"]) and details["ridges"] == [1e-4, 1e-3, 1e-2, 1e-1]
    guard = details["guard"]
    assert guard["reverted"] and guard["kept"] == "pruned" and guard["val_refit"]["loss"] > before["loss"]
    assert _same_weights(guarded, model) and _val(guarded, task)["loss"] == before["loss"]


@pytest.mark.parametrize("recovery", ["finetune", "distill"])
def test_training_recovery_that_only_hurts_returns_the_pruned_weights(pruned, recovery):
    model, _, task = pruned
    recovered, history, _, _ = _recovered(pruned, recovery, epochs=2, finetune_lr=0.3)
    assert history["guard"] == "val_loss" and history["best_epoch"] == 0
    assert all(e["val_loss"] > history["val_at_start"]["loss"] for e in history["epochs"])
    assert _same_weights(recovered, model)


def test_finetune_that_helps_keeps_a_later_epoch(pruned):
    model, _, task = pruned
    recovered, history, _, _ = _recovered(pruned, "finetune", epochs=2, finetune_lr=1e-3)
    best = history["best_epoch"]
    assert best > 0 and history["epochs"][best - 1]["val_loss"] < history["val_at_start"]["loss"]
    assert _val(recovered, task)["loss"] == pytest.approx(history["epochs"][best - 1]["val_loss"], rel=1e-6)


# ---- distillation ---------------------------------------------------------------------------------
def test_distill_with_alpha_zero_is_plain_finetuning(pruned):
    finetuned, h_ft, _, _ = _recovered(pruned, "finetune")
    plain, h_d, params, _ = _recovered(pruned, "distill", distill_alpha=0.0)
    assert params == dict(epochs=1, lr=1e-4, tau=1.0, alpha=0.0, feature_weight=0.0)
    assert len(h_d["epochs"]) == 1 and h_d["steps"] == h_ft["steps"] > 0
    for (k, va), vb in zip(finetuned.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(va, vb), k


def test_distill_trains_towards_the_teacher(pruned):
    model = pruned[0]
    soft, history, _, _ = _recovered(pruned, "distill", distill_alpha=0.9, distill_tau=2.0)
    mimic, _, params, _ = _recovered(pruned, "distill", distill_alpha=0.9, distill_tau=2.0, distill_feature_weight=1.0)
    assert history["epochs"][0]["train_loss"] > 0 and params["feature_weight"] == 1.0
    assert not torch.equal(soft.head.weight, model.head.weight)
    assert not torch.equal(soft.blocks[0].attn.qkv.weight, mimic.blocks[0].attn.qkv.weight)
    assert len(mimic.norm._forward_pre_hooks) == 0  # the feature hook does not outlive the call


# ---- options and the command line ---------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("ridge", -1.0), ("ridge", float("nan")), ("distill_tau", 0.0),
                                          ("distill_alpha", 1.5), ("distill_feature_weight", -0.1),
                                          ("calib_samples", 0)])
def test_bad_recovery_options_are_rejected_naming_the_value(field, value):
    with pytest.raises(NuwaError, match=f"{field}={value!r}"):
        DeriveOptions(**{field: value}).validate()


def test_cli_bad_value_is_one_line_with_exit_status_2(base_dir, npz, tmp_path, capsys):
    rc = main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,east", "--rate", "0.5",
               "--recovery", "closed-form", "--ridge", "-2", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "ridge=-2.0" in err and len(err.splitlines()) == 1
    rc = main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,east", "--rate", "0.5",
               "--recovery", "distill", "--distill-alpha", "2", "--out", str(tmp_path / "x")])
    assert rc == 2 and "distill_alpha=2.0" in capsys.readouterr().err


def test_cli_derive_closed_form_end_to_end(base_dir, npz, tmp_path, capsys):
    options = tmp_path / "options.yaml"
    options.write_text(json.dumps(dict(prune_depth=False, embed_score_samples=128)))  # JSON is YAML
    out = tmp_path / "edge"
    rc = main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,east,centre", "--rate", "0.6",
               "--recovery", "closed-form", "--ridge", "0.01", "--calib-samples", "96", "--score-samples", "64",
               "--taylor-microbatch", "16",
               "--batch-size", "32", "--options", str(options), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["recovery"] == "closed-form" and report["finetune_epochs"] == 0
    assert report["recovery_params"] == dict(ridge=0.01, calib_samples=96)
    assert report["recovery_details"]["calib_images"] == 96 and report["finetune_history"] is None
    assert report["options"]["ridge"] == 0.01 and report["seconds"]["recovery"] > 0
    assert report["val_loss"] < report["val_loss_before_recovery"]
    guard = report["recovery_details"]["guard"]  # the numbers that decided to keep the refit
    assert guard["val_before"]["loss"] == report["val_loss_before_recovery"] and guard["kept"] == "refit"
    assert guard["val_refit"] == dict(loss=report["val_loss"], top1=report["val_top1"])
    assert nuwa.load(out).config.classes == SUB


def test_any_recovery_runs_as_its_own_step_with_the_same_result_as_inside_derive(base_dir, npz, tmp_path, capsys):
    """`nuwa finetune --recovery closed-form` on a `--recovery none` derivation gives the weights of
    `derive --recovery closed-form` (the workflow recovers in a separate rule), finding the base
    through the derive report."""
    options = tmp_path / "options.yaml"
    options.write_text(json.dumps(dict(prune_depth=False, embed_score_samples=128, batch_size=32)))
    common = ["--model", str(base_dir), "--data", npz, "--classes", "north,east,centre", "--rate", "0.6",
              "--score-samples", "64", "--options", str(options), "--seed", "3"]
    assert main(["derive", *common, "--recovery", "none", "--out", str(tmp_path / "pruned")]) == 0
    assert main(["derive", *common, "--recovery", "closed-form", "--calib-samples", "96",
                 "--out", str(tmp_path / "direct")]) == 0
    capsys.readouterr()
    assert main(["finetune", "--model", str(tmp_path / "pruned"), "--data", npz, "--recovery", "closed-form",
                 "--calib-samples", "96", "--seed", "3", "--options", str(options),
                 "--out", str(tmp_path / "step")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["recovery"] == "closed-form" and line["epochs"] == 0 and line["val_top1"] >= line["val_top1_before"]
    a, b = nuwa.load(tmp_path / "step"), nuwa.load(tmp_path / "direct")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    report = json.loads((tmp_path / "step" / "report.json").read_text())
    assert report["recovery"] == "closed-form" and report["recovery_params"]["calib_samples"] == 96
    assert report["val_loss"] < report["val_loss_before_recovery"]


def test_cli_finetune_that_only_hurts_reports_the_kept_starting_weights(base_dir, npz, tmp_path, capsys):
    options = tmp_path / "options.yaml"
    options.write_text(json.dumps(dict(prune_depth=False, embed_score_samples=128, batch_size=32, finetune_lr=0.3)))
    out = tmp_path / "edge"
    assert main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,east,centre", "--rate", "0.6",
                 "--recovery", "finetune", "--finetune-epochs", "1", "--score-samples", "64",
                 "--options", str(options), "--out", str(out)]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    history = report["finetune_history"]
    assert history["best_epoch"] == 0 and history["epochs"][0]["val_loss"] > history["val_at_start"]["loss"]
    assert history["val_at_start"]["loss"] == report["val_loss_before_recovery"] == report["val_loss"]


def test_a_recovery_that_needs_the_base_fails_clearly_without_it(base_dir, npz, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["derive", "--model", str(base_dir), "--data", npz, "--classes", "north,east", "--rate", "0.5",
                 "--recovery", "none", "--score-samples", "32", "--out", str(out)]) == 0
    capsys.readouterr()
    rc = main(["finetune", "--model", str(out), "--data", npz, "--recovery", "distill",
               "--base", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nowhere" in err and len(err.splitlines()) == 1 and not (tmp_path / "x").exists()
    rc = main(["finetune", "--model", str(out), "--data", npz, "--recovery", "prune-more", "--out", str(tmp_path / "x")])
    assert rc == 2 and "prune-more" in capsys.readouterr().err and not (tmp_path / "x").exists()
