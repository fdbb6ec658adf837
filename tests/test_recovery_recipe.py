"""The recovery recipes (nuwa.recovery.recipe): the standard one, warm-up, cosine and layer-wise lr
decay, distillation whose teacher logits are cached, candidates chosen on validation, an early
stop on validation; and the paper's recipe, as the paper states it."""
import copy
import math

import pytest
import torch

from nuwa.cli import main
from nuwa.errors import NuwaError
from nuwa.options import DeriveOptions
from nuwa.recovery import PAPER_RECIPE, recover
from nuwa.recovery.recipe import search_order
from nuwa.distillation import TeacherCache, sliced_teacher_logits
from nuwa.optim import layer_id, param_groups
from nuwa.train import fit
from tests.test_recovery import FAST, _val, base_dir, npz, one_thread, pruned  # noqa: F401  (module fixtures)
from tests.test_train import fresh_model, textures

QUICK = dict(FAST, recovery_round=96, recovery_max_samples=480, recovery_search_samples=64, recovery_patience=2)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- layer-wise lr decay ----------------------------------------------------------------------
def test_layer_ids_count_embeddings_zero_blocks_from_one_and_the_head_last():
    assert layer_id("patch_embed.proj.weight", 12) == 0
    assert layer_id("pos_embed", 12) == layer_id("cls_token", 12) == 0
    assert layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_id("norm.weight", 12) == layer_id("head.weight", 12) == 13


def test_layer_decay_scales_each_group_by_its_distance_from_the_head():
    model = fresh_model()
    depth = len(model.blocks)
    groups = param_groups(model, 0.05, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale_of[id(model.head.weight)] == 1.0
    assert scale_of[id(model.pos_embed)] == 0.5 ** (depth + 1)
    for i, block in enumerate(model.blocks):
        assert scale_of[id(block.attn.qkv.weight)] == 0.5 ** (depth - i)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.head.weight) in decayed and id(model.head.bias) not in decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["lr_scale"] == 1.0 for g in param_groups(model, 0.05))  # no decay: one rate


def test_with_strong_layer_decay_the_embeddings_barely_move_and_the_head_does():
    data = textures(64, 0)
    changes = {}
    for decay in (1.0, 1e-3):
        model = fresh_model()
        before = _state(model)
        fit(model, data, epochs=1, lr=1e-2, weight_decay=0.0, batch_size=16, layer_decay=decay, desc=None)
        after = model.state_dict()
        changes[decay] = {k: float((after[k] - before[k]).norm() / before[k].norm().clamp_min(1e-12))
                          for k in ("patch_embed.proj.weight", "head.weight")}
    assert changes[1e-3]["patch_embed.proj.weight"] < 0.01 * changes[1.0]["patch_embed.proj.weight"]
    assert changes[1e-3]["head.weight"] > 0.3 * changes[1.0]["head.weight"]


# ---- warm-up --------------------------------------------------------------------------------------
def test_the_first_steps_of_a_warm_up_move_the_weights_less():
    """Adam's first step moves every weight by about the lr: with warm-up over 4 steps the first
    step's lr is a quarter of the peak."""
    data = textures(16, 0)
    moved = {}
    for warmup in (0.0, 1.0):
        model = fresh_model()
        before = _state(model)
        fit(model, data, epochs=1, lr=1e-3, weight_decay=0.0, batch_size=16, warmup_epochs=warmup * 4, desc=None)
        moved[warmup] = float((model.head.weight.detach() - before["head.weight"]).abs().max())
    assert moved[1.0] == pytest.approx(moved[0.0] / 4, rel=0.05)


# ---- the teacher cache ------------------------------------------------------------------------------
def test_cached_teacher_logits_are_the_live_teachers(pruned):
    model, base, task = pruned
    cache = TeacherCache(base, model, len(task.fit))
    from nuwa.data import batches

    for seed in (0, 1):  # the second pass reads back what the first computed, and adds the rest
        order_start = 0
        from nuwa.data import sample_order

        order = sample_order(len(task.fit), True, seed, 200)
        for x, _ in batches(task.fit, batch_size=32, shuffle=True, seed=seed, limit=200):
            x = task.preprocess(x)
            index = order[order_start:order_start + len(x)]
            order_start += len(x)
            live = sliced_teacher_logits(base.eval(), x, cache.cols)
            torch.testing.assert_close(cache.logits(index, x), live, rtol=0, atol=1e-5)
    assert cache.forwards == int(cache.known.sum()) <= 400


def test_training_from_the_cache_matches_training_from_the_live_teacher(pruned):
    model, base, task = pruned
    runs = {}
    for cached in (False, True):
        student = copy.deepcopy(model)
        cache = TeacherCache(base, student, len(task.fit)) if cached else None
        history = fit(student, task.fit, epochs=3, lr=1e-3, weight_decay=0.05, batch_size=32, seed=0, limit=160,
                      preprocess=task.preprocess, teacher=None if cached else base, teacher_cache=cache, desc=None)
        runs[cached] = (student, history)
    for (k, a), b in zip(runs[False][0].state_dict().items(), runs[True][0].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    assert runs[False][1]["teacher_forwards"] == 480  # one pass per step's images
    assert runs[True][1]["teacher_forwards"] < 480  # images drawn twice ran once


def test_a_teacher_cache_refuses_augmentation(pruned):
    model, base, task = pruned
    with pytest.raises(NuwaError, match="augment"):
        fit(copy.deepcopy(model), task.fit, epochs=1, lr=1e-3, weight_decay=0.0, augment=True,
            teacher_cache=TeacherCache(base, model, len(task.fit)), preprocess=task.preprocess, desc=None)


def test_a_teacher_without_the_students_classes_is_refused(pruned):
    model, base, _ = pruned
    other = copy.deepcopy(model)
    other.config.classes = [1, 3, 5]
    with pytest.raises(NuwaError, match=r"teacher has no output for the student's class\(es\) \[0, 2, 4\]"):
        TeacherCache(other, model, 10)


# ---- the early stop --------------------------------------------------------------------------------
def test_training_stops_after_patience_rounds_without_a_lower_validation_loss(pruned):
    model, _, task = pruned
    student = copy.deepcopy(model)
    history = fit(student, task.fit, epochs=6, lr=0.5, weight_decay=0.0, batch_size=32, seed=0, limit=64,
                  val_ds=task.val, preprocess=task.preprocess, patience=2, desc=None)
    assert history["stopped_after"] == 2 and len(history["epochs"]) == 2  # lr 0.5 only hurts
    assert history["best_epoch"] == 0
    assert _val(student, task)["loss"] == pytest.approx(history["val_at_start"]["loss"], rel=1e-6)


def test_early_stopping_needs_a_validation_set():
    with pytest.raises(NuwaError, match="patience"):
        fit(fresh_model(), textures(8, 0), epochs=2, lr=1e-3, weight_decay=0.0, patience=1, desc=None)


# ---- the standard recipe ------------------------------------------------------------------------------
def test_standard_recovery_chooses_lr_and_distillation_on_validation_and_stops_on_it(pruned):
    model, base, task = pruned
    student = copy.deepcopy(model)
    opts = DeriveOptions(**QUICK, recovery_lrs=(1e-3, 1e-6), recovery_distill_alphas=(0.5, 0.9))
    assert search_order(opts, teacher=True) == ([1e-3, 1e-6], [0.5, 0.9])
    assert search_order(opts, teacher=False) == ([1e-3, 1e-6], [0.0])
    history, params, details = recover(student, base, task, recovery="standard", epochs=5, opts=opts, seed=0)
    tried = details["candidates"]
    # the lrs at the first weight, then the other weight at the lr that won
    assert [(c["lr"], c["distill_alpha"]) for c in tried[:2]] == [(1e-3, 0.5), (1e-6, 0.5)]
    best_lr = max(tried[:2], key=lambda c: (c["val_top1"], -c["val_loss"]))["lr"]
    assert [(c["lr"], c["distill_alpha"]) for c in tried[2:]] == [(best_lr, 0.9)]
    best = max([c for c in tried if c["lr"] == best_lr], key=lambda c: (c["val_top1"], -c["val_loss"]))
    assert details["chosen"] == dict(lr=best["lr"], distill_alpha=best["distill_alpha"])
    assert (params["lr"], params["distill_alpha"]) == (best["lr"], best["distill_alpha"])
    assert params["layer_decay"] == 0.75 and params["warmup_fraction"] == 0.1
    assert details["search_samples"] == 3 * 64
    rounds = math.ceil(480 / 96)
    assert history["guard"] == "val_loss" and 1 <= history["stopped_after"] <= rounds
    assert details["rounds_trained"] == history["stopped_after"]
    assert details["stopped"] == ("at the sample cap" if history["stopped_after"] == rounds else
                                  "early: validation loss did not fall for 2 rounds")
    kept = history["best_epoch"]
    loss = history["epochs"][kept - 1]["val_loss"] if kept else history["val_at_start"]["loss"]
    assert _val(student, task)["loss"] == pytest.approx(loss, rel=1e-6)
    assert 0 < details["teacher_forwards"] <= len(task.fit)  # each image at most once, across every run


def test_standard_recovery_is_repeatable_for_a_seed(pruned):
    model, base, task = pruned
    opts = DeriveOptions(**QUICK, recovery_lrs=(1e-3,), recovery_distill_alphas=(0.5,))
    runs = []
    for _ in range(2):
        student = copy.deepcopy(model)
        _, _, details = recover(student, base, task, recovery="standard", epochs=0, opts=opts, seed=3)
        runs.append((student, details))
    assert runs[0][1] == runs[1][1] and runs[0][1]["candidates"] == []  # one pair: nothing to choose
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)


def test_standard_recovery_without_a_base_trains_on_labels_alone(pruned):
    model, _, task = pruned
    opts = DeriveOptions(**QUICK, recovery_lrs=(1e-3,))
    _, params, details = recover(copy.deepcopy(model), None, task, recovery="standard", epochs=0, opts=opts, seed=0)
    assert params["distill_alpha"] == 0.0 and details["teacher_forwards"] == 0


# ---- the paper's recipe -------------------------------------------------------------------------------
def test_the_paper_recipe_is_adamw_at_1e_4_with_weight_decay_0_05_for_5_epochs_of_every_sample(pruned):
    assert PAPER_RECIPE == dict(lr=1e-4, weight_decay=0.05, epochs=5)
    model, base, task = pruned
    history, params, details = recover(copy.deepcopy(model), base, task, recovery="paper", epochs=1,
                                       opts=DeriveOptions(**FAST), seed=0)
    assert params == dict(lr=1e-4, weight_decay=0.05, epochs=5, samples=5 * len(task.fit)) and details is None
    assert len(history["epochs"]) == 5 and history["steps"] == 5 * math.ceil(len(task.fit) / FAST["batch_size"])


def test_recipes_that_set_their_own_budget_refuse_a_sample_limit(pruned):
    model, base, task = pruned
    for recovery in ("standard", "paper"):
        with pytest.raises(NuwaError, match=f"--limit 100 is for --recovery finetune and distill; {recovery}"):
            recover(copy.deepcopy(model), base, task, recovery=recovery, epochs=1, opts=DeriveOptions(**FAST),
                    seed=0, limit=100)


# ---- bad input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, needle", [
    ("--layer-decay", "1.5", "option layer_decay=1.5 must be a number in (0, 1]"),
    ("--recovery-lrs", "0.001,-1", "option recovery_lrs=(0.001, -1.0) must be one or more numbers > 0"),
    ("--recovery-distill-alphas", "2", "option recovery_distill_alphas=(2.0,) must be one or more numbers in [0, 1]"),
    ("--warmup-fraction", "1", "option warmup_fraction=1.0 must be a number in [0, 1)"),
])
def test_a_recovery_option_out_of_range_is_one_line_and_exit_2(flag, value, needle, tmp_path, capsys):
    out = tmp_path / "edge"
    code = main(["finetune", "--model", str(tmp_path / "missing"), "--data", "fashion-mnist", flag, value,
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0]
    assert not out.exists()
