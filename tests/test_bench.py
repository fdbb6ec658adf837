"""Hardware benchmarks: what `nuwa bench` and the Table 4 builder measure and compute.

Speed itself is a benchmark result (results/*/tables/table4.*, results/speed/), never asserted
here: these tests pin the bookkeeping -- rows per runtime and batch, the speedup and FLOPs-bound
arithmetic, errors -- on a tiny model.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import nuwa
from nuwa.arch import EdgeViTConfig
from nuwa.bench import bench_suite, measure_latency
from nuwa.errors import NuwaError
from nuwa.paper.table4 import PAPER_SPEEDUP, budget_check, rounding_table, speedup_figure, table4
from nuwa.paper.table3 import BASE_FULL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = EdgeViTConfig.uniform(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2.0, num_classes=3, img_size=16,
                                patch_size=4, in_chans=1, mean=(0.5,), std=(0.5,))
    d = tmp_path_factory.mktemp("bench") / "model"
    nuwa.save(nuwa.EdgeViT(cfg).eval(), d)
    return d


def test_every_runtime_and_batch_size_gets_a_row_with_consistent_numbers(tiny):
    model = nuwa.load(tiny)
    rows = bench_suite(model, batch_sizes=[1, 4], runtimes=["torch", "onnx"], warmup=1, repeats=5, threads=1)
    assert [(r["runtime"], r["batch_size"]) for r in rows] == [("torch", 1), ("torch", 4), ("onnx", 1), ("onnx", 4)]
    for r in rows:
        assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"] and r["repeats"] == 5 and r["threads"] == 1
        assert r["throughput"] == pytest.approx(r["batch_size"] / (r["latency_ms_median"] / 1e3))
        assert r["weight_bytes"] == 4 * nuwa.count_params(model) and r["device"] == "cpu"
        assert r["peak_mem_mb"] is None or r["peak_mem_mb"] >= 0


@pytest.mark.unloaded
def test_min_seconds_keeps_timing_past_the_repeats(tiny):
    r = measure_latency(nuwa.load(tiny), repeats=2, warmup=0, min_seconds=0.2)
    assert r["repeats"] > 2


@pytest.mark.slow
def test_torch_compile_either_runs_or_says_why(tiny):
    # Inductor needs a C++ compiler; where it is missing the suite records the reason.
    rows = bench_suite(nuwa.load(tiny), batch_sizes=[2], runtimes=["compile"], on_error="record", repeats=3, warmup=1)
    assert len(rows) == 1 and (rows[0].get("latency_ms_median", 0) > 0 or "torch.compile" in rows[0]["error"])


@pytest.mark.parametrize("kw, needle", [
    (dict(runtime="tensorrt"), "tensorrt"), (dict(batch_size=0), "batch size 0"), (dict(device="tpu"), "tpu"),
])
def test_bad_bench_arguments_are_named(tiny, kw, needle):
    with pytest.raises(NuwaError, match=needle):
        measure_latency(nuwa.load(tiny), repeats=1, **kw)


@pytest.mark.slow
def test_the_cli_prints_one_flat_object_for_one_case_and_a_list_for_several(tiny, capfd):
    common = ["bench", "--model", str(tiny), "--repeats", "2", "--warmup", "0"]
    # From a shell: its own process, the JSON object on stdout's last line.
    r = subprocess.run([sys.executable, "-m", "nuwa.cli", *common], capture_output=True, text=True)
    one = json.loads(r.stdout.strip().splitlines()[-1])
    assert one["runtime"] == "torch" and one["batch_size"] == 1 and one["params"] > 0 and one["flops"] > 0

    def bench(*args):  # the rest in this process (`python -m nuwa.cli` is `sys.exit(main())`)
        from nuwa.cli import main

        capfd.readouterr()
        try:
            code = main([*common, *args])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        return code, *capfd.readouterr()

    code, out, _ = bench("--runtime", "torch,onnx", "--batch-size", "1,3")
    several = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and [(r["runtime"], r["batch_size"]) for r in several["results"]] == [
        ("torch", 1), ("torch", 3), ("onnx", 1), ("onnx", 3)]
    for args, needle in ((["--runtime", "torch,tvm"], "tvm"), (["--batch-size", "1,x"], "'x'"),
                         (["--batch-size", "0"], "batch size 0"), (["--device", "tpu"], "tpu")):
        code, _, err = bench(*args)
        assert code == 2 and needle in err.strip().splitlines()[-1], err


def bench_rows():
    """Hand-made timings: a base at 10 ms and 100 ms, two sub-tasks' edge ViTs per alpha."""
    rows = []
    for runtime, scale in (("onnx", 1.0), ("torch", 2.0)):
        rows.append(dict(base="b", subtask=None, alpha=None, runtime=runtime, batch_size=8, params=1000,
                         flops=10_000, latency_ms_median=10 * scale))
        for sub, lat in (("H1", 5.0), ("S1", 4.0)):
            rows.append(dict(base="b", subtask=sub, alpha=0.8, runtime=runtime, batch_size=8, params=250,
                             flops=2_000 if sub == "H1" else 2_500, latency_ms_median=lat * scale))
    rows.append(dict(base="b", subtask="H1", alpha=0.8, runtime="compile", batch_size=8, error="no compiler"))
    return pd.DataFrame(rows)


def test_table4_speedup_is_the_mean_per_model_ratio_against_the_flops_bound():
    acc = pd.DataFrame([dict(base="b", subtask="H1", method=BASE_FULL, alpha=0.0, top1=0.70),
                        dict(base="b", subtask="S1", method=BASE_FULL, alpha=0.0, top1=0.90),
                        dict(base="b", subtask="H1", method="nuwa", alpha=0.8, top1=0.75),
                        dict(base="b", subtask="S1", method="nuwa", alpha=0.8, top1=0.91),
                        dict(base="b", subtask="H2", method="nuwa", alpha=0.8, top1=0.10)])  # not benchmarked
    t = table4(bench_rows(), acc).set_index("runtime")
    assert list(t.index) == ["onnx", "torch"]  # the compile row that failed is left out
    onnx = t.loc["onnx"]
    assert onnx.speedup == pytest.approx((10 / 5 + 10 / 4) / 2) and onnx.flops_ratio == pytest.approx((5 + 4) / 2)
    assert onnx.of_bound == pytest.approx(onnx.speedup / onnx.flops_ratio) and onnx.models == 2
    assert onnx.latency_ms == pytest.approx(4.5) and onnx.base_latency_ms == 10
    assert t.loc["torch"].speedup == pytest.approx(onnx.speedup)  # both scale by 2
    assert onnx.top1_gain_vs_base == pytest.approx(((0.75 - 0.70) + (0.91 - 0.90)) / 2)
    assert onnx.paper_cpu_speedup == PAPER_SPEEDUP["cpu"][0.8]


def test_the_speedup_figure_is_deterministic(tmp_path):
    t = table4(bench_rows())
    speedup_figure(t, tmp_path / "a.png", title="x")
    speedup_figure(t, tmp_path / "b.png", title="x")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".*tmp*"))


def test_a_budget_is_met_only_by_the_fresh_measurement():
    assert budget_check(0.9, 1.1, 1.0)["meets_budget"] is False  # in-derivation timing alone would pass
    ok = budget_check(1.2, 0.8, 1.0)
    assert ok["meets_budget"] is True and ok["headroom"] == pytest.approx(0.2)


def test_the_rounding_table_compares_every_multiple_with_the_exact_sizes():
    rows = pd.DataFrame([dict(round_to=m, runtime="onnx", batch_size=1, top1=0.8, flops=100 + m, params=10,
                              latency_ms_median=lat) for m, lat in ((1, 2.0), (8, 1.6), (32, 2.5))])
    t = rounding_table(rows).set_index("round_to")
    assert list(t.speedup_vs_exact) == [1.0, 1.25, 0.8]


def test_the_onnx_op_profile_splits_the_time_by_operator(tiny):
    from nuwa.bench import onnx_op_profile

    ops = onnx_op_profile(nuwa.load(tiny), batch_size=4, threads=1, repeats=2)
    assert {"MatMul", "Softmax"} <= set(ops) and all(ms >= 0 for ms in ops.values())
    assert list(ops.values()) == sorted(ops.values(), reverse=True)  # the costliest first
