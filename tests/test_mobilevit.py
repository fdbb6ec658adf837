"""MobileViT in nuwa, as specifications: timm's MobileViT converts to an `EdgeMobileViT` computing
the same logits; its sizes count exactly; it saves, loads, exports and describes itself like an
`EdgeViT`; every pruning operator cuts one dimension and nothing else; `nuwa derive` derives
classifiers and segmenters from it (NuWa, the MobileViT compression study's recipe, distillation from a teacher); and
bad input is refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import timm

import nuwa
from nuwa.cli import main
from nuwa.cost import measure_flops
from nuwa.data.scenes import SCENE_CLASSES, write_scenes
from nuwa.data.spec import FASHION_MNIST_ROOT
from nuwa.errors import NuwaError
from nuwa.mobilevit import cost
from nuwa.mobilevit import prune as P
from nuwa.mobilevit.convert import create, from_timm
from nuwa.mobilevit.methods import rotate
from nuwa.mobilevit.scores import Layout
from nuwa.options import DeriveOptions

# The pipeline's copy if it has been made, else Debian's package (scripts/setup.sh installs it).
FMNIST = next((p for p in (Path(__file__).resolve().parents[1] / "data" / "fashion-mnist", FASHION_MNIST_ROOT)
               if (p / "t10k-images-idx3-ubyte.gz").is_file()), FASHION_MNIST_ROOT)
needs_fmnist = pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason="Fashion-MNIST is not installed")


def _with_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so that conversion must carry them."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _segmenter(img: int = 32, name: str = "mobilevit_xxs", seed: int = 0) -> nuwa.EdgeViT:
    torch.manual_seed(seed)
    timm_model = _with_bn_stats(create(name, num_classes=10, in_chans=1))
    return from_timm(timm_model, img_size=img, task="segment", num_classes=11, decoder_dim=16,
                     class_names=list(SCENE_CLASSES)).eval()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scenes") / "scenes.npz"
    if (FMNIST / "t10k-images-idx3-ubyte.gz").is_file():
        write_scenes(FMNIST, path, train=96, test=24, canvas=32, seed=0)
    else:  # scene files in the same format, with random items
        rng = np.random.default_rng(0)
        np.savez(path, **{f"{k}_{s}": v for s, n in (("train", 96), ("test", 24)) for k, v in (
            ("x", rng.integers(0, 255, (n, 1, 32, 32), dtype=np.uint8)),
            ("m", rng.integers(0, 11, (n, 32, 32), dtype=np.uint8)))}, class_names=np.array(SCENE_CLASSES))
    return f"scenes:{path}"


@pytest.fixture(scope="module")
def seg_base(scenes, tmp_path_factory) -> Path:
    """A segmenter base trained for one epoch on the tiny scenes (`nuwa pretrain`'s library call)."""
    from nuwa.mobilevit.base import pretrain

    out = tmp_path_factory.mktemp("mv") / "base"
    pretrain("mobilevit_xxs", scenes, out=out, epochs=1, batch_size=32, decoder_dim=16, seed=0)
    return out


# ---- conversion ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s"])
@pytest.mark.parametrize("img", [64, 96])  # 96: the last stage's 3x3 map is resampled around attention
def test_every_listed_mobilevit_converts_to_the_same_logits(name, img):
    timm_model = _with_bn_stats(create(name, num_classes=7, in_chans=3))
    edge = from_timm(timm_model, img_size=img)
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(edge(x), timm_model(x), atol=1e-4)
    assert edge.config.depth == {"mobilevit_xxs": 9, "mobilevit_xs": 9, "mobilevit_s": 9}[name]


@pytest.mark.parametrize("name, reason", [("mobilevitv2_050", "linear attention"),
                                          ("semobilevit_s", "unsupported MobileViT variant")])
def test_variants_this_design_does_not_cover_are_refused_with_the_reason(name, reason):
    with pytest.raises(NuwaError, match=reason):
        create(name)


def test_the_flat_api_converts_a_mobilevit_and_derive_asks_for_a_base_directory(npz):
    timm_model = _with_bn_stats(nuwa.create_base("mobilevit_xxs", num_classes=6, in_chans=1))
    edge = nuwa.from_timm(timm_model, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(edge(x), timm_model(x), atol=1e-4)
    with pytest.raises(NuwaError, match="nuwa pretrain --model mobilevit_xxs"):
        nuwa.derive("mobilevit_xxs", npz, classes="north,south", rate=0.3)


def test_a_segmenter_shares_the_backbone_and_adds_a_decoder():
    timm_model = _with_bn_stats(create("mobilevit_xxs", num_classes=10, in_chans=1))
    seg = from_timm(timm_model, img_size=32, task="segment", num_classes=11, decoder_dim=16)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert seg(x).shape == (2, 11, 32, 32)
        assert torch.equal(seg.forward_features(x), timm_model.forward_features(x))


# ---- sizes ---------------------------------------------------------------------------------------
def test_param_and_flop_counts_equal_the_measured_ones_before_and_after_pruning():
    seg = _segmenter()
    lay = Layout.of(seg.config)
    cut = P.prune_heads(seg, {(2, 1): [[0, 2], [3]]})
    cut = P.prune_width(cut, {(3, 1): list(range(0, 80, 3))})
    cut = P.prune_expansion(cut, {(1, 1): list(range(20))})
    for model in (seg, cut, from_timm(_with_bn_stats(create("mobilevit_s", num_classes=5)), img_size=64)):
        assert cost.count_params(model.config) == sum(p.numel() for p in model.parameters())
        assert cost.count_flops(model.config) == measure_flops(model)
        assert nuwa.count_params(model.config) == cost.count_params(model.config)  # the flat API counts it too
        assert nuwa.count_flops(model) == cost.count_flops(model.config)
    assert len(lay.layers) == 9 and len(lay.irs) == 7 and lay.widths == [64, 80, 96]


# ---- save, load, export, info -------------------------------------------------------------------
@pytest.mark.slow
def test_save_load_export_and_info_work_as_for_an_edge_vit(tmp_path, capsys):
    import onnxruntime as ort

    from nuwa.export import convert, export, read_meta

    seg = _segmenter()
    nuwa.save(seg, tmp_path / "m")
    back = nuwa.load(tmp_path / "m")
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = seg(x)
        assert torch.equal(back(x), ref)
    fp32 = export(tmp_path / "m", tmp_path / "m_fp32.onnx")
    for precision, tol in (("fp32", 1e-4), ("fp16", 5e-2), ("int8", None)):  # one export, converted
        path = fp32 if precision == "fp32" else convert(fp32, tmp_path / f"m_{precision}.onnx", config=seg.config,
                                                        precision=precision)
        out = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0]
        assert out.shape == (3, 11, 32, 32) and np.isfinite(out).all()
        if tol is not None:
            assert np.abs(out - ref.numpy()).max() < tol
        cfg, recorded = read_meta(path)
        assert cfg.to_dict() == seg.config.to_dict() and recorded.startswith(precision)
    assert main(["info", str(tmp_path / "m")]) == 0
    info = capsys.readouterr().out
    last = json.loads(info.strip().splitlines()[-1])
    assert last["family"] == "mobilevit" and last["params"] == cost.count_params(seg.config)
    assert "width 64" in info and "4h qk16 v16 mlp128" in info


def test_a_model_directory_whose_weights_do_not_fit_its_config_is_refused(tmp_path):
    seg = _segmenter()
    nuwa.save(seg, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["stages"][2][1]["width"] = 48
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(NuwaError, match="has shape"):
        nuwa.load(tmp_path / "m")


# ---- pruning operators ------------------------------------------------------------------------------
def test_keeping_everything_is_the_identity_and_each_operator_cuts_only_its_dimension():
    seg = _segmenter()
    x = torch.randn(2, 1, 32, 32)
    full = [[0, 1, 2, 3]] * 2
    with torch.no_grad():
        ref = seg(x)
        for model in (P.prune_heads(seg, {(2, 1): full}), P.prune_width(seg, {(2, 1): list(range(64))}),
                      P.prune_expansion(seg, {(1, 1): list(range(48))}), P.prune_qk(seg, {(2, 1): [16, 16]}),
                      P.prune_v(seg, {(2, 1): [16, 16]}), P.prune_mlp(seg, {(2, 1): [list(range(128))] * 2})):
            assert torch.allclose(model(x), ref, atol=1e-5)
    b = lambda m: m.config.stages[2][1]  # noqa: E731
    assert [l.num_heads for l in b(P.prune_heads(seg, {(2, 1): [[1], [0, 3]]})).layers] == [1, 2]
    assert [l.qk_dim for l in b(P.prune_qk(seg, {(2, 1): [8, 4]})).layers] == [8, 4]
    assert [l.v_dim for l in b(P.prune_v(seg, {(2, 1): [8, 4]})).layers] == [8, 4]
    assert [l.mlp_dim for l in b(P.prune_mlp(seg, {(2, 1): [[0, 5], [1]]})).layers] == [2, 1]
    cut = P.prune_width(seg, {(2, 1): [0, 1, 2]})
    assert b(cut).width == 3 and b(cut).layers == b(seg).layers and b(cut).out_chs == 48
    assert P.prune_expansion(seg, {(1, 1): [4, 7]}).config.stages[1][1].mid_chs == 2
    sliced = P.prune_classes(seg, [0, 6, 8])
    assert sliced.config.classes == [0, 6, 8] and sliced.config.class_names == ["background", "Sandal", "Sneaker"]
    with torch.no_grad():
        assert torch.allclose(sliced(x), ref[:, [0, 6, 8]], atol=1e-5)


def test_the_svd_rotation_keeps_the_function_and_sorts_each_heads_directions():
    seg = _segmenter()
    rotated, spectra = rotate(seg, Layout.of(seg.config))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rotated(x), seg(x), atol=1e-4)
    assert len(spectra.qk) == 9 and all((s[:, :-1] >= s[:, 1:]).all() for s in spectra.qk + spectra.v)


@pytest.mark.parametrize("bad, message", [
    (lambda m: P.prune_heads(m, {(2, 1): [[], [0]]}), "non-empty"),
    (lambda m: P.prune_width(m, {(1, 0): [0]}), "is 'ir', not 'mvit'"),
    (lambda m: P.prune_mlp(m, {(2, 1): [[500], [0]]}), "in 0..127"),
    (lambda m: P.prune_classes(m, [0, 0]), "distinct"),
])
def test_a_bad_keep_list_is_refused_naming_the_block(bad, message):
    with pytest.raises(NuwaError, match=message):
        bad(_segmenter())


# ---- derivation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nuwa", "norm", "nuwa-norm"])
def test_derive_reaches_the_rate_keeps_the_task_classes_and_exports(seg_base, scenes, tmp_path, method):
    opts = DeriveOptions(score_samples=32, batch_size=32)
    model, report = nuwa.derive(seg_base, scenes, classes="Sandal,Sneaker,Bag", rate=0.3, metric="params",
                                method=method, finetune_epochs=1, options=opts, out=tmp_path / "d")
    assert 0.3 <= report["rate_achieved"] <= 0.36
    assert report["params"] == cost.count_params(model.config) == sum(p.numel() for p in model.parameters())
    assert model.config.classes == [0, 6, 8, 9] and model.config.num_classes == 4
    assert 0 <= report["val_miou"] <= 1 and report["task"] == "segment"
    heads = [l.num_heads for _, _, b in model.config.mvit_blocks for l in b.layers]
    if method == "norm":  # the MobileViT compression study: every layer keeps 2 of its 4 heads; widths and convolutions stay
        assert heads == [2] * 9 and [b.width for _, _, b in model.config.mvit_blocks] == [64, 80, 96]
    else:
        assert 9 < sum(heads) <= 36
    assert nuwa.load(tmp_path / "d").config.to_dict() == model.config.to_dict()


def test_nuwa_eval_reads_a_derived_segmenter_for_its_own_classes(seg_base, scenes, tmp_path, capsys):
    nuwa.derive(seg_base, scenes, classes="Sandal,Sneaker,Bag", rate=0.3, metric="params", method="norm",
                recovery="none", out=tmp_path / "d")
    assert main(["eval", "--model", str(tmp_path / "d"), "--data", scenes]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert ev["classes"] == [5, 7, 8] and list(ev["per_class_iou"]) == ["background", "Sandal", "Sneaker", "Bag"]
    assert main(["eval", "--model", str(seg_base), "--data", scenes, "--classes", "Sandal,Sneaker,Bag"]) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the base read for the same classes
    assert full["images"] == ev["images"] and list(full["per_class_iou"]) == list(ev["per_class_iou"])


def test_distillation_with_feature_mimicking_trains_and_leaves_no_adapter_behind(seg_base, scenes, tmp_path):
    opts = DeriveOptions(score_samples=32, batch_size=32, distill_feature_weight=1.0)
    model, report = nuwa.derive(seg_base, scenes, classes="Sandal,Sneaker", rate=0.3, metric="params",
                                recovery="distill", teacher=str(seg_base), finetune_epochs=1, options=opts,
                                out=tmp_path / "d")
    history = report["finetune_history"]
    assert history["kd"] and history["feat"] and all(np.isfinite(history["feat"]))
    assert not hasattr(model, "mimic_adapter") and nuwa.load(tmp_path / "d") is not None


# The MobileViT compression study's teacher is a Swin.
@pytest.mark.parametrize("teacher", ["mobilevit_xxs", "swin_tiny_patch4_window7_224"])
def test_a_classifier_derives_with_a_timm_teacher_from_a_local_checkpoint(npz, tmp_path, teacher):
    base = from_timm(create("mobilevit_xxs", num_classes=6, in_chans=1), img_size=32,
                     class_names=["north", "south", "east", "west", "centre", "corner"])
    nuwa.save(base, tmp_path / "base")
    torch.save(timm.create_model(teacher, num_classes=6, in_chans=1, img_size=32).state_dict(),
               tmp_path / "teacher.pth")
    opts = DeriveOptions(score_samples=32, batch_size=64)
    model, report = nuwa.derive(tmp_path / "base", npz, classes="north,south", rate=0.3, metric="params",
                                recovery="distill", teacher=teacher,
                                teacher_checkpoint=str(tmp_path / "teacher.pth"), finetune_epochs=1, options=opts)
    assert model.config.classes == [0, 1] and report["task"] == "classify" and 0 <= report["val_top1"] <= 1


# ---- bad input ---------------------------------------------------------------------------------------
def _derive_cli(base, data, tmp_path, capsys, *extra, classes="Sandal,Sneaker"):
    """`nuwa derive` (its `main`, in this process): (exit status, stderr, the output path)."""
    out = tmp_path / "out"
    status = main(["derive", "--model", str(base), "--data", data, "--classes", classes, "--rate", "0.3",
                   "--metric", "params", "--out", str(out), *extra])
    return status, capsys.readouterr().err, out


@pytest.mark.parametrize("extra, message", [
    (("--recovery", "distill", "--teacher", "no_such_model"), "not a model directory nor a timm model name"),
    (("--recovery", "distill"), "needs --teacher"),
    (("--recovery", "distill", "--teacher", "mobilevit_xxs"), "distils from a segmenter"),
    (("--method", "random"), "not available for MobileViT"),
])
def test_a_bad_teacher_or_method_is_one_line_exit_2_and_nothing_written(seg_base, scenes, tmp_path, capsys,
                                                                       extra, message):
    status, err, out = _derive_cli(seg_base, scenes, tmp_path, capsys, *extra)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_teacher_whose_classes_do_not_match_is_refused(seg_base, scenes, tmp_path, capsys):
    other = from_timm(create("mobilevit_xxs", num_classes=4, in_chans=1), img_size=32, task="segment",
                      num_classes=5, decoder_dim=16)
    nuwa.save(other, tmp_path / "teacher")
    status, err, out = _derive_cli(seg_base, scenes, tmp_path, capsys, "--recovery", "distill",
                                   "--teacher", str(tmp_path / "teacher"))
    assert status == 2 and "a teacher must output the base's classes" in err and not out.exists()


def test_a_scenes_file_without_a_mask_is_refused_naming_it(seg_base, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "bad.npz", x_train=rng.integers(0, 255, (4, 1, 32, 32), dtype=np.uint8),
             x_test=rng.integers(0, 255, (4, 1, 32, 32), dtype=np.uint8),
             m_test=np.zeros((4, 32, 32), np.uint8), class_names=np.array(SCENE_CLASSES))
    status, err, out = _derive_cli(seg_base, f"scenes:{tmp_path / 'bad.npz'}", tmp_path, capsys)
    assert status == 2 and "no m_train" in err and not out.exists()


def test_mobilevit_only_options_are_refused_for_a_vit(base_dir, npz, tmp_path, capsys):
    for extra, message in ((("--method", "norm"), "is for MobileViT bases"),
                           (("--teacher", str(base_dir)), "--teacher is for MobileViT bases")):
        status, err, out = _derive_cli(base_dir, npz, tmp_path, capsys, *extra, classes="north,south")
        assert status == 2 and message in err and not out.exists()


@pytest.mark.parametrize("extra, message", [(("--pretrained",), "--pretrained does not apply to MobileViT"),
                                            (("--patch-size", "4"), "--patch-size does not apply to MobileViT"),
                                            (("--kd-tau", "0"), "--kd-tau 0.0 must be")])
def test_pretrain_refuses_vit_only_flags_and_bad_distillation_values(scenes, tmp_path, capsys, extra, message):
    status = main(["pretrain", "--model", "mobilevit_xxs", "--data", scenes, "--out", str(tmp_path / "b"), *extra])
    assert status == 2 and message in capsys.readouterr().err and not (tmp_path / "b").exists()
