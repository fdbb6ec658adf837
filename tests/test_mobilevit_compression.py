"""The MobileViT compression study's table (`nuwa.paper.mobilevit_compression`), as specifications:
rows pool their seeds, comparisons are paired over (seed, image) with verdicts from the interval,
and the study's findings are read from them, on hand-made confusions whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from nuwa.paper.mobilevit_compression import ROWS, compare, findings, summarise, to_markdown
from nuwa.paper.stats import CONTRADICTED, HOLDS, INCONCLUSIVE


def _confs(accuracy: float, n: int = 200, k: int = 3, seed: int = 0) -> np.ndarray:
    """(n, k, k) per-image confusions of 100 pixels each: about `accuracy` of them right."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, k, k), np.int64)
    for i in range(n):
        t = rng.integers(0, k, 100)
        p = np.where(rng.random(100) < accuracy, t, (t + 1) % k)
        np.add.at(out[i], (t, p), 1)
    return out


def _record(key: str, mem: float = 10.0, mb: float = 4.0) -> dict:
    return dict(row=key, params=1000, flops=2000, latency_ms=1.0, fps=1000.0, peak_mem_mb=mem, onnx_mb=mb)


@pytest.fixture()
def table():
    acc = {"baseline": 0.6, "kd": 0.8, "norm": 0.79, "nuwa": 0.79, "nuwa-fp16": 0.79, "nuwa-int8": 0.7}
    confs = {key: [_confs(a, seed=s) for s in (0, 1)] for key, a in acc.items()}
    confs["nuwa-fp16"] = confs["nuwa"]  # the same predictions at half the size
    records = {key: [_record(key, mem=5.0 if key == "nuwa-fp16" else 10.0,
                             mb=2.0 if key == "nuwa-fp16" else 4.0)] * 2 for key in acc}
    return records, confs


def test_rows_follow_the_tables_order_and_pool_every_seed(table):
    records, confs = table
    rows = summarise(records, confs)
    assert [r["row"] for r in rows] == [key for key, *_ in ROWS if key in records]
    kd = next(r for r in rows if r["row"] == "kd")
    assert kd["seeds"] == 2 and kd["miou_lo"] < kd["miou"] < kd["miou_hi"]


def test_comparisons_give_verdicts_from_paired_intervals(table):
    _, confs = table
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in compare(confs, samples=300)}
    assert verdicts[("kd", "baseline")] == HOLDS  # a 20-point gain over 400 images
    assert verdicts[("nuwa-fp16", "nuwa")] == INCONCLUSIVE  # identical predictions: a zero-width interval at 0
    assert verdicts[("nuwa-int8", "nuwa")] == HOLDS  # "int8 costs mIoU": it does here
    assert ("nuwa", "nuwa-svdoff") not in verdicts  # rows that were not measured are not compared


def test_seed_004s_findings_are_read_from_the_comparisons_and_the_memory(table):
    records, confs = table
    rows, comps = summarise(records, confs), compare(confs, samples=300)
    found = {f["finding"]: f["verdict"] for f in findings(rows, comps)}
    assert found["distillation gives the largest gain"] == HOLDS
    assert found["pruning alone changes mIoU little (within 2 points)"] in (HOLDS, INCONCLUSIVE)
    assert found["fp16 halves memory at no IoU cost"] == HOLDS
    records["nuwa-fp16"] = [_record("nuwa-fp16", mem=9.0)] * 2  # memory no smaller: the finding fails
    assert {f["finding"]: f["verdict"] for f in findings(summarise(records, confs), comps)}[
        "fp16 halves memory at no IoU cost"] == CONTRADICTED
    md = to_markdown(rows, comps, findings(rows, comps), subset=["Sandal"], seeds=[0, 1], class_names=["bg", "a", "b"])
    assert "| + distillation |" in md and "distillation raises mIoU" in md
    assert "| model | bg | a | b |" in md  # the MobileViT compression study's class-wise question: IoU per class and row
