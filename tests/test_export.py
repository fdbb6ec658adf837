"""Edge export at fp32 / fp16 / int8 (nuwa.export, nuwa.onnx_eval): files load and run in ONNX Runtime, agree with
fp32, shrink as they should, and bad input is one line, exit 2, nothing written.

The model is a small derived-style model (3 of the 6 blob classes of tests.test_derive's data set,
2 blocks of width 96 so the file is weight-dominated), trained for two epochs so that accuracy and
argmax agreement are measured on a model whose predictions mean something.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import nuwa
from nuwa.arch import EdgeViTConfig
from nuwa.cli import main
from nuwa.data import class_subset, open_split
from nuwa.errors import NuwaError
from nuwa.export import INT8_KERNELS, META_INT8, export, read_meta
from nuwa.onnx_eval import compare_precisions, evaluate_onnx
from nuwa.train import fit
# `npz`, the tiny blob data set, is a session fixture (tests/conftest.py).

CLASSES = [0, 2, 4]  # north, east, centre of tests.test_derive.CLASSES


@pytest.fixture(scope="module")
def edge_dir(npz, tmp_path_factory):
    train = open_split(npz, "train")
    cfg = EdgeViTConfig.uniform(depth=2, embed_dim=96, num_heads=3, num_classes=3, img_size=28, patch_size=7,
                                in_chans=1, mean=(0.25,), std=(0.3,), classes=CLASSES,
                                class_names=[train.class_names[c] for c in CLASSES])
    torch.manual_seed(0)
    model = nuwa.EdgeViT(cfg)
    # One thread: a model this small gains nothing from two, and on a shared 2-core machine two
    # threads stall behind other processes (ten times slower for this fit).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(model, class_subset(train, CLASSES), epochs=2, lr=1e-3, weight_decay=0.05, batch_size=32, desc=None)
    finally:
        torch.set_num_threads(threads)
    return nuwa.save(model, tmp_path_factory.mktemp("export") / "edge")


@pytest.fixture(scope="module")
def compared(edge_dir, npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("files")
    rows = compare_precisions(edge_dir, npz, precisions=("fp32", "fp16", "int8-dynamic", "int8-static"),
                              batch_sizes=(1, 4), threads=1, warmup=1, repeats=3, calib_samples=64, out_dir=out)
    return {r["precision"]: r for r in rows}, out


def _n_test(npz: str) -> int:  # the sub-task's test split: the model's classes only
    return len(class_subset(open_split(npz, "test"), CLASSES))


def test_every_precision_runs_and_agrees_with_fp32(compared, npz):
    rows, _ = compared
    fp32 = rows["fp32"]
    assert fp32["n"] == _n_test(npz) and fp32["top1"] > 0.9  # the model learned the task: agreement means something
    for r in rows.values():
        assert r["n"] == fp32["n"] and r["latency_ms_b1"] > 0 and r["latency_ms_b4"] > 0 and r["threads"] == 1
    # fp16 rounds every weight and activation to 11 significant bits (relative error ~5e-4 per
    # op); through two blocks the logits move by well under 1 % of their largest magnitude.
    assert rows["fp16"]["rel_logit_diff"] < 1e-2 and rows["fp16"]["argmax_agreement"] >= 0.99
    # int8 keeps 8 bits per weight (and activation): logits move by a few % of their scale, so only
    # close calls can flip. 95 % leaves room for those on ~120 images (the default model measures
    # 98.4-99.95 % on 4000-10000 Fashion-MNIST test images).
    for mode in ("int8-dynamic", "int8-static"):
        assert rows[mode]["argmax_agreement"] >= 0.95, rows[mode]
        assert abs(rows[mode]["top1"] - fp32["top1"]) <= 0.05 and rows[mode]["rel_logit_diff"] < 0.25


def test_files_keep_the_fp32_interface_and_shrink(compared):
    rows, out = compared
    # fp16 halves every weight; int8 quarters them plus scales and zero points. Graph overhead
    # (node and tensor names) is a few % of this weight-dominated model, hence the margins.
    assert 0.45 < rows["fp16"]["bytes_vs_fp32"] < 0.6, rows["fp16"]
    assert rows["int8-dynamic"]["bytes_vs_fp32"] < 0.35 and rows["int8-static"]["bytes_vs_fp32"] < 0.35
    f32 = onnx.TensorProto.FLOAT
    for name, weight_type in [("fp16", onnx.TensorProto.FLOAT16), ("int8-dynamic", onnx.TensorProto.INT8),
                              ("int8-static", onnx.TensorProto.INT8)]:
        m = onnx.load(str(out / f"{name}.onnx"))
        assert [i.type.tensor_type.elem_type for i in m.graph.input] == [f32]
        assert [o.type.tensor_type.elem_type for o in m.graph.output] == [f32]
        assert any(t.data_type == weight_type for t in m.graph.initializer), name
        assert not any(n.metadata_props for n in m.graph.node)  # no exporter stack traces / local paths
        cfg, precision = read_meta(out / f"{name}.onnx")
        assert precision == name and cfg.classes == CLASSES
    assert sorted(p.name for p in out.iterdir()) == ["fp16.onnx", "fp32.onnx", "int8-dynamic.onnx",
                                                     "int8-static.onnx"]


def test_evaluate_onnx_labels_like_nuwa_eval(compared, edge_dir, npz):
    rows, out = compared
    from nuwa.data import Preprocess
    from nuwa.evaluate import evaluate_dir

    torch_eval = evaluate_dir(edge_dir, npz)
    got = evaluate_onnx(out / "fp32.onnx", npz, threads=1)  # spec: the test split of the model's classes
    assert got["n"] == torch_eval["n"] and got["top1"] == pytest.approx(torch_eval["top1"], abs=1 / got["n"])
    ds = class_subset(open_split(npz, "test"), CLASSES)  # a data set: used as given
    cfg = nuwa.load(edge_dir).config
    again = evaluate_onnx(out / "int8-dynamic.onnx", ds, preprocess=Preprocess.for_config(cfg), batch_size=7,
                          limit=50, threads=1)
    assert again["n"] == 50
    # Dynamic int8 takes activation ranges per batch, so equal results need equal batches (256).
    assert evaluate_onnx(out / "int8-dynamic.onnx", ds, threads=1)["top1"] == rows["int8-dynamic"]["top1"]


def test_cli_export_static_int8_then_eval_onnx(edge_dir, npz, tmp_path, capfd):
    # In process (`python -m nuwa.cli` is `sys.exit(main())`): a second interpreter would spend
    # most of its time importing torch and timm. capfd: stdout must hold only the JSON line,
    # even at the file-descriptor level where the exporter and ORT might write.
    path = tmp_path / "edge-int8.onnx"
    assert main(["export", "--model", str(edge_dir), "--onnx", str(path), "--int8", "--int8-mode", "static",
                 "--calib-data", npz, "--calib-samples", "32"]) == 0
    stdout = capfd.readouterr().out.strip().splitlines()
    assert len(stdout) == 1, stdout
    summary = json.loads(stdout[0])
    assert summary == dict(onnx=str(path), precision="int8-static", bytes=path.stat().st_size,
                           int8_weights=INT8_KERNELS)
    # The file itself says which integer kernels it was quantised for (7-bit weights: no
    # saturation on x86 CPUs without VNNI, so the bounds above hold on every CPU).
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta[META_INT8] == INT8_KERNELS and "7-bit" in INT8_KERNELS
    assert [p.name for p in tmp_path.iterdir()] == ["edge-int8.onnx"]  # no temporary left behind
    assert main(["eval", "--onnx", str(path), "--data", npz, "--classes", "north,east,centre"]) == 0
    ev = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert ev["n"] == _n_test(npz) and ev["precision"] == "int8-static" and ev["class_names"] == ["north", "east", "centre"]
    assert ev["top1"] == evaluate_onnx(path, npz, threads=1)["top1"] > 0.85


def test_fp32_file_matches_pytorch(compared, edge_dir):
    _, out = compared
    model = nuwa.load(edge_dir)
    x = torch.randn(3, 1, 28, 28)
    from nuwa.bench import onnx_session

    got = onnx_session(out / "fp32.onnx", 1).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)


BAD = [
    (["--int8", "--int8-mode", "fast"], "'fast'"),
    (["--fp16", "--int8-mode", "static"], "int8_mode='static'"),
    (["--int8", "--int8-mode", "static"], "calib"),
    (["--int8", "--int8-mode", "static", "--calib-data", "{npz}", "--calib-samples", "0"], "calib_samples=0"),
    (["--int8", "--int8-mode", "static", "--calib-data", "{npz}", "--calib-samples", "-3"], "calib_samples=-3"),
    (["--int8", "--int8-mode", "static", "--calib-data", "npz:/nonexistent/c.npz"], "/nonexistent/c.npz"),
    (["--int8", "--int8-mode", "static", "--calib-data", "npz:{few}"], "class index 4"),
    (["--int8", "--calib-data", "{npz}"], "only used by static"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
]


@pytest.mark.parametrize("extra, needle", BAD, ids=[b[1] for b in BAD])
def test_bad_export_input_is_one_line_exit_2_and_no_file(edge_dir, npz, tmp_path, capsys, extra, needle):
    few = tmp_path.parent / f"{tmp_path.name}-few.npz"  # two classes only: the model's index 4 is missing
    y = np.array([0, 1] * 4)
    np.savez(few, x_train=np.zeros((8, 28, 28), np.uint8), y_train=y, x_test=np.zeros((8, 28, 28), np.uint8),
             y_test=y, class_names=np.array(["a", "b"]))
    fill = dict(npz=npz, few=few)
    args = {"--model": str(edge_dir), "--onnx": str(tmp_path / "out" / "m.onnx")}
    extra = [a.format(**fill) for a in extra]
    if "--model" in extra:
        args["--model"] = extra[extra.index("--model") + 1]
        extra = extra[:extra.index("--model")] + extra[extra.index("--model") + 2:]
    assert main(["export", *[t for kv in args.items() for t in kv], *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nuwa export: error:") and needle in err[0], err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("kw, needle", [
    (dict(precision="int4"), "'int4'"), (dict(precision="int8", int8_mode="static"), "calib"),
    (dict(precision="int8-static", calib="x", calib_samples=0), "calib_samples=0"),
])
def test_bad_export_arguments_raise_before_any_work(kw, needle, tmp_path):
    with pytest.raises(NuwaError, match=needle):
        export("/nonexistent/model", tmp_path / "m.onnx", **kw)  # argument errors come before loading
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--onnx", "/nonexistent/m.onnx", "--data", "{npz}"], "/nonexistent/m.onnx"),
    (["eval", "--data", "{npz}"], "--model"),
])
def test_bad_eval_onnx_input(argv, needle, npz, capsys):
    assert main([a.format(npz=npz) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
