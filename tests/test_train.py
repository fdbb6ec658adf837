"""fit, evaluate (with sliced classifiers), features, per-layer heads: nuwa.train, nuwa.evaluate and
nuwa.layer_classifiers.

All data here is synthetic and tiny; the model is the irregular 28x28, 1-channel, 4-class
config, so every fit takes well under a second.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nuwa
from nuwa import NuwaError
from nuwa.data import MemoryDataset, Preprocess
from nuwa.evaluate import collect_cls_tokens, evaluate, predict_logits
from nuwa.layer_classifiers import train_linear_heads
from nuwa.train import augment_batch, cosine_lr, distillation_loss, fit, seed_everything, teacher_columns

from .conftest import irregular_config


def textures(n: int, seed: int) -> MemoryDataset:
    """4 classes told apart by texture: horizontal stripes, vertical stripes, checkerboard,
    plain noise; random phase and noise per image. Texture survives averaging over tokens,
    so a freshly initialised ViT learns it in a few epochs; flips and 2-px shifts keep it."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    r = torch.arange(28)
    phase = torch.randint(0, 4, (n, 1, 1), generator=g)
    rows = ((r[None, :, None] + phase) // 2 % 2).expand(n, 28, 28)
    cols = ((r[None, None, :] + phase) // 2 % 2).expand(n, 28, 28)
    pattern = torch.stack([rows, cols, rows ^ cols, torch.zeros_like(rows)], 1)[torch.arange(n), y]
    x = torch.randint(0, 80, (n, 1, 28, 28), generator=g) + 120 * pattern[:, None]
    return MemoryDataset(x.clamp(0, 255).to(torch.uint8), y.numpy(), ["h", "v", "check", "plain"])


def fresh_model(seed: int = 0) -> nuwa.EdgeViT:
    torch.manual_seed(seed)
    return nuwa.EdgeViT(irregular_config())


def constant_logits_model(bias: list[float]) -> nuwa.EdgeViT:
    """A model whose logits are `bias` for every input (zero head weights)."""
    model = fresh_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(bias))
    return model.eval()


# ---- fit ------------------------------------------------------------------------------------
def test_fit_learns_a_separable_task_and_reports_history():
    train, val = textures(256, seed=0), textures(128, seed=1)
    model = fresh_model()
    lines = []
    history = fit(model, train, epochs=3, lr=5e-3, weight_decay=0.05, batch_size=16, warmup_epochs=0.5,
                  val_ds=val, log=lines.append)
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert set(epochs[0]) == {"epoch", "train_loss", "val_top1", "val_loss", "seconds"}
    assert history["steps"] == 3 * 16 and history["samples_seen"] == 3 * 256
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    assert epochs[-1]["val_top1"] > 0.9  # chance is 0.25
    assert epochs[-1]["val_loss"] < math.log(4)
    assert len(lines) == 3 and "val top1" in lines[-1]
    assert not model.training
    # The kept epoch's validation numbers are what evaluate reports for the final weights.
    assert evaluate(model, val)["top1"] == epochs[history["best_epoch"] - 1]["val_top1"]


def test_fit_that_helps_keeps_the_epoch_with_the_lowest_validation_loss():
    train, val = textures(256, seed=0), textures(128, seed=1)
    model = fresh_model()
    history = fit(model, train, epochs=3, lr=5e-3, weight_decay=0.05, batch_size=16, val_ds=val, desc=None)
    losses = [history["val_at_start"]["loss"]] + [e["val_loss"] for e in history["epochs"]]
    assert history["guard"] == "val_loss" and history["best_epoch"] == losses.index(min(losses)) > 0
    assert history["val_at_start"]["top1"] < 0.5  # an untrained model: training helped
    kept = evaluate(model, val, desc=None)
    assert kept["loss"] == pytest.approx(min(losses), rel=1e-6)
    assert kept["top1"] == history["epochs"][history["best_epoch"] - 1]["val_top1"]


def test_fit_that_only_hurts_returns_the_starting_weights_and_says_so():
    train, val = textures(256, seed=0), textures(128, seed=1)
    model = fresh_model()
    fit(model, train, epochs=3, lr=5e-3, weight_decay=0.05, batch_size=16, desc=None)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lines = []
    history = fit(model, train, epochs=2, lr=0.3, weight_decay=0.05, batch_size=16, val_ds=val, desc=None,
                  log=lines.append)  # a learning rate far too high: every epoch is worse than the start
    at_start = history["val_at_start"]
    assert all(e["val_loss"] > at_start["loss"] for e in history["epochs"]), (at_start, history["epochs"])
    assert history["best_epoch"] == 0 and history["steps"] == 2 * 16
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert evaluate(model, val, desc=None) == dict(at_start, n=128)
    assert "kept the weights of epoch 0" in lines[-1] and not model.training


def test_fit_without_validation_keeps_the_last_epoch_and_says_no_guard_ran():
    model = fresh_model()
    history = fit(model, textures(32, 0), epochs=2, lr=0.3, weight_decay=0.05, batch_size=16, desc=None)
    assert history["guard"] is None and history["val_at_start"] is None and history["best_epoch"] == 2


@pytest.mark.parametrize("augment", [False, True])
def test_fit_is_deterministic_for_a_seed(augment):
    train = textures(64, seed=0)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = fresh_model()
        fit(model, train, epochs=2, lr=3e-3, weight_decay=0.05, batch_size=16, seed=seed, augment=augment)
        return model.state_dict()

    rng_before = torch.get_rng_state()
    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # fit forks the global RNG instead of reseeding the caller's.
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_fit_with_zero_epochs_changes_nothing():
    model = fresh_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model, textures(8, 0), epochs=0, lr=1e-3, weight_decay=0.05)
    assert history == {"epochs": [], "steps": 0, "samples_seen": 0, "guard": None, "val_at_start": None,
                       "best_epoch": 0, "stopped_after": 0, "teacher_forwards": 0}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("kw, name", [
    (dict(epochs=-1), "epochs=-1"),
    (dict(lr=0.0), "lr=0.0"),
    (dict(lr=-0.001), "lr=-0.001"),
    (dict(weight_decay=-0.1), "weight_decay=-0.1"),
    (dict(batch_size=0), "batch_size=0"),
    (dict(label_smoothing=1.0), "label_smoothing=1.0"),
])
def test_fit_rejects_bad_values_by_name(kw, name):
    args = dict(epochs=1, lr=1e-3, weight_decay=0.05) | kw
    with pytest.raises(NuwaError, match=name):
        fit(fresh_model(), textures(8, 0), **args)


def test_fit_rejects_labels_the_model_does_not_have():
    ds = MemoryDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), np.array([0, 1, 2, 4]), list("abcde"))
    with pytest.raises(NuwaError, match="label 4"):
        fit(fresh_model(), ds, epochs=1, lr=1e-3, weight_decay=0.0)


def test_progress_bars_go_to_stderr_and_desc_none_silences_them(capsys):
    ds = textures(16, 0)
    fit(fresh_model(), ds, epochs=1, lr=1e-3, weight_decay=0.0, batch_size=8, val_ds=ds, desc="warm")
    assert "warm 1/1" in capsys.readouterr().err
    model = fresh_model()
    fit(model, ds, epochs=1, lr=1e-3, weight_decay=0.0, batch_size=8, val_ds=ds, desc=None)
    evaluate(model, ds, desc=None)
    predict_logits(model, ds, desc=None)
    feats, labels = collect_cls_tokens(model, ds, desc=None)
    train_linear_heads(feats, labels, 4, epochs=1, desc=None)
    assert capsys.readouterr() == ("", "")


def test_fit_stops_on_a_non_finite_loss():
    def nan_loss(logits, targets, x):
        return logits.sum() * float("nan")

    with pytest.raises(NuwaError, match="loss became nan at step 1"):
        fit(fresh_model(), textures(8, 0), epochs=1, lr=1e-3, weight_decay=0.0, loss_fn=nan_loss)


def test_weight_decay_spares_biases_norms_and_tokens_and_follows_the_schedule():
    """With a zero loss AdamW only decays: every decayed tensor shrinks by exactly
    prod(1 - lr_t * wd) over the cosine schedule; the exempt ones do not move at all."""
    model = fresh_model()
    before = {k: v.clone() for k, v in model.named_parameters()}
    seen = []

    def zero_loss(logits, targets, x):
        seen.append((x.dtype, tuple(x.shape), targets.dtype))
        return (logits * 0).sum()

    lr, wd = 0.1, 0.5
    history = fit(model, textures(40, 0), epochs=2, lr=lr, weight_decay=wd, batch_size=16, warmup_epochs=1,
                  loss_fn=zero_loss)
    assert seen[0] == (torch.float32, (16, 1, 28, 28), torch.int64)  # the preprocessed batch
    steps = history["steps"]
    assert steps == 6
    factor = math.prod(1 - wd * cosine_lr(s, total_steps=steps, warmup_steps=3, base_lr=lr) for s in range(steps))
    exempt = {k for k, p in before.items() if p.ndim <= 1} | {"cls_token", "pos_embed"}
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias", "blocks.0.attn.qkv.bias"} <= exempt
    for name, p in model.named_parameters():
        if name in exempt:
            assert torch.equal(p, before[name]), name
        else:
            torch.testing.assert_close(p, before[name] * factor, rtol=1e-5, atol=1e-8)


def test_cosine_lr_warms_up_linearly_then_decays_to_zero():
    lrs = [cosine_lr(s, total_steps=10, warmup_steps=4, base_lr=1.0) for s in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0  # cosine starts at the peak
    assert lrs[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert cosine_lr(10, total_steps=10, warmup_steps=4, base_lr=1.0) == pytest.approx(0.0)
    assert cosine_lr(0, total_steps=5, warmup_steps=0, base_lr=2.0) == 2.0


def test_augment_batch_shifts_by_at_most_two_pixels_and_flips():
    x = torch.randint(1, 256, (32, 2, 9, 11), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(0)))
    padded = F.pad(x, (2, 2, 2, 2))
    found = []
    for i in range(len(x)):
        matches = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                   if torch.equal(out[i], (lambda c: c.flip(-1) if flip else c)(padded[i, :, dy:dy + 9, dx:dx + 11]))]
        assert matches, f"image {i} is not a <=2 px shift (and flip) of its input"
        found.append(matches[0])
    assert len(set(found)) > 10  # per-image draws, not one transform for the batch
    assert {flip for _, _, flip in found} == {False, True}


def test_fit_with_a_teacher_distils_and_leaves_the_teacher_alone():
    teacher = fresh_model(seed=1).train()
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = fresh_model()
    history = fit(student, textures(32, 0), epochs=1, lr=1e-3, weight_decay=0.05, batch_size=16, teacher=teacher)
    assert history["steps"] == 2 and math.isfinite(history["epochs"][0]["train_loss"])
    assert all(torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training  # its mode is restored


def test_distillation_loss_is_ce_plus_kl():
    torch.manual_seed(0)
    logits, teacher, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(logits, y)
    assert distillation_loss(logits, y, logits) == pytest.approx(0.5 * ce.item(), rel=1e-6)
    kl = (F.softmax(teacher, -1) * (F.log_softmax(teacher, -1) - F.log_softmax(logits, -1))).sum(-1).mean()
    assert distillation_loss(logits, y, teacher) == pytest.approx((0.5 * ce + 0.5 * kl).item(), rel=1e-5)


def test_teacher_columns_map_student_classes_into_the_teacher():
    base = nuwa.EdgeViT(irregular_config(classes=None, num_classes=10, class_names=None))
    edge = fresh_model()  # classes [7, 5, 9, 1] of the base
    assert teacher_columns(edge, base) == [7, 5, 9, 1]
    assert teacher_columns(edge, fresh_model()) is None  # same classes: all columns, in order
    small = nuwa.EdgeViT(irregular_config(num_classes=2, classes=[5, 3], class_names=None))
    with pytest.raises(NuwaError, match=r"\[3\]"):
        teacher_columns(small, edge)


def test_seed_everything_makes_all_generators_repeat():
    import random

    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    with pytest.raises(NuwaError, match="seed=-1"):
        seed_everything(-1)


# ---- evaluate and predictions ---------------------------------------------------------------------
def test_evaluate_with_classes_slices_the_classifier():
    """Logits are [3, 2, 1, 0] everywhere: the full classifier always says class 0; sliced to
    classes [2, 3] it always says 2. Labels 2, 2, 2, 3 -> sliced top-1 = 3/4."""
    model = constant_logits_model([3.0, 2.0, 1.0, 0.0])
    ds = MemoryDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), np.array([2, 2, 2, 3]), list("abcd"))
    full = evaluate(model, ds)
    assert full["top1"] == 0.0 and full["n"] == 4
    assert full["loss"] == pytest.approx(-(3 * F.log_softmax(torch.tensor([3.0, 2, 1, 0]), 0)[2]
                                           + F.log_softmax(torch.tensor([3.0, 2, 1, 0]), 0)[3]).item() / 4)
    sliced = evaluate(model, ds, classes=[2, 3])
    assert sliced["top1"] == 0.75 and sliced["n"] == 4
    # Loss over the two kept logits [1, 0]: log(1 + e^-1) for label 2, log(1 + e) for label 3.
    assert sliced["loss"] == pytest.approx((3 * math.log1p(math.exp(-1)) + math.log1p(math.e)) / 4)
    # Order matters: labels map to positions in `classes`, so [3, 2] gives the same answer.
    assert evaluate(model, ds, classes=[3, 2])["top1"] == 0.75
    assert evaluate(model, ds, classes=[2, 3], limit=3)["top1"] == 1.0


def test_evaluate_rejects_labels_outside_classes_and_bad_classes():
    model = constant_logits_model([3.0, 2.0, 1.0, 0.0])
    ds = MemoryDataset(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), np.array([2, 0, 3]), list("abcd"))
    with pytest.raises(NuwaError, match="label 0 is not one of classes"):
        evaluate(model, ds, classes=[2, 3])
    with pytest.raises(NuwaError, match=r"classes \[4\]"):
        evaluate(model, ds, classes=[2, 4])
    with pytest.raises(NuwaError, match="no samples"):
        evaluate(model, ds, limit=0)


def test_predict_logits_matches_the_model_and_keeps_its_mode(irregular_model):
    ds = textures(20, seed=3)
    irregular_model.train()
    logits, labels = predict_logits(irregular_model, ds, batch_size=8)
    assert irregular_model.training
    pre = Preprocess.for_config(irregular_model.config)
    with torch.no_grad():
        expected = irregular_model.eval()(pre(ds.images))
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, torch.from_numpy(ds.targets))
    assert predict_logits(irregular_model, ds, limit=5)[0].shape == (5, 4)


# ---- features and layer heads -----------------------------------------------------------------------
def test_collect_cls_tokens_gives_one_token_matrix_per_layer(irregular_model):
    ds = textures(10, seed=4)
    feats, labels = collect_cls_tokens(irregular_model, ds, batch_size=4)
    assert [tuple(f.shape) for f in feats] == [(10, 40)] * 3
    assert torch.equal(labels, torch.from_numpy(ds.targets))
    # The last layer's token through the model's own norm + head is the model's output.
    with torch.no_grad():
        logits = irregular_model.head(irregular_model.norm(feats[-1]))
        torch.testing.assert_close(logits, irregular_model(Preprocess.for_config(irregular_model.config)(ds.images)),
                                   rtol=1e-5, atol=1e-5)
    assert not torch.equal(feats[0], feats[1])
    assert collect_cls_tokens(irregular_model, ds, limit=3)[0][0].shape == (3, 40)


def separable_features(n: int = 300, d: int = 8, classes: int = 3, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Two 'layers' of linearly separable features: class centres far apart, small noise,
    a different random offset and scale per layer (the heads' LayerNorm must cope)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    feats = []
    for scale in (1.0, 5.0):
        centres = 3 * torch.randn(classes, d, generator=g)
        feats.append(scale * (centres[labels] + 0.5 * torch.randn(n, d, generator=g) + torch.randn(d, generator=g)))
    return feats, labels


def head_accuracy(head: dict[str, torch.Tensor], f: torch.Tensor, labels: torch.Tensor) -> float:
    z = F.layer_norm(f, (f.shape[-1],), head["norm.weight"], head["norm.bias"], 1e-6)
    return (F.linear(z, head["head.weight"], head["head.bias"]).argmax(-1) == labels).float().mean().item()


def test_train_linear_heads_learns_separable_features_deterministically():
    feats, labels = separable_features()
    heads = train_linear_heads(feats, labels, 3, epochs=20, lr=1e-2, batch_size=64)
    assert len(heads) == 2
    for head, f in zip(heads, feats):
        assert {k: tuple(v.shape) for k, v in head.items()} == {
            "norm.weight": (8,), "norm.bias": (8,), "head.weight": (3, 8), "head.bias": (3,)}
        assert head_accuracy(head, f, labels) > 0.9
    again = train_linear_heads(feats, labels, 3, epochs=20, lr=1e-2, batch_size=64)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(heads, again) for k in a)
    other = train_linear_heads(feats, labels, 3, epochs=20, lr=1e-2, batch_size=64, seed=1)
    assert not torch.equal(heads[0]["head.weight"], other[0]["head.weight"])


def test_train_linear_heads_trains_each_layer_on_its_own():
    """Stacking is only for speed: a layer's head is the same whether trained alone or with others."""
    feats, labels = separable_features()
    together = train_linear_heads(feats, labels, 3, epochs=3, batch_size=64)
    alone = train_linear_heads(feats[1:], labels, 3, epochs=3, batch_size=64)
    for k in together[1]:
        torch.testing.assert_close(together[1][k], alone[0][k], rtol=1e-5, atol=1e-6)


def test_train_linear_heads_rejects_bad_input():
    feats, labels = separable_features()
    with pytest.raises(NuwaError, match="layer 1"):
        train_linear_heads([feats[0], feats[1][:, :4]], labels, 3)
    with pytest.raises(NuwaError, match="label 2"):
        train_linear_heads(feats, labels, 2)
    with pytest.raises(NuwaError, match="lr=0"):
        train_linear_heads(feats, labels, 3, lr=0)


def test_a_linear_probe_trains_the_classifier_alone_on_frozen_features():
    from nuwa.probe import linear_probe

    torch.manual_seed(0)
    cfg = nuwa.EdgeViTConfig.uniform(depth=2, embed_dim=32, num_heads=2, img_size=28, patch_size=7, in_chans=1,
                                     num_classes=2, mean=(0.5,), std=(0.25,))
    model = nuwa.EdgeViT(cfg).eval()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.integers(0, 40, (400, 1, 28, 28)).astype(np.uint8)
    x[y == 1, :, :14] = 220  # class 1: a bright top half, which any random feature map sees
    ds = MemoryDataset(torch.from_numpy(x), y, ["dark", "bright"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = linear_probe(model, ds, epochs=30, lr=1e-2, seed=0, desc=None)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert report["samples"] == 400 and report["train_top1"] > 0.95
    assert linear_probe(nuwa.EdgeViT(cfg).eval(), ds, epochs=1, limit=50, seed=0, desc=None)["samples"] == 50
    with pytest.raises(NuwaError, match="probe_epochs=0"):
        linear_probe(model, ds, epochs=0)


# ---- progress in logs ---------------------------------------------------------------------------
def test_progress_off_a_terminal_is_whole_lines_without_carriage_returns(capfd):
    from nuwa.loop_utils import progress

    bar = progress(300, "scoring")
    for _ in range(3):
        bar.update(100)
    bar.close()
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("scoring:") for line in lines)
    assert "300/300" in lines[-1]  # the final state is always written


def test_progress_of_nested_bars_off_a_terminal_has_no_cursor_movements(capfd):
    from nuwa.loop_utils import progress

    outer = progress(2, "epoch")
    inner = progress(10, "val")  # opened while the outer bar is still open, as validation is
    inner.update(10)
    inner.close()
    outer.update(2)
    outer.close()
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert [line.split(":")[0] for line in err.splitlines()][-2:] == ["val", "epoch"]
