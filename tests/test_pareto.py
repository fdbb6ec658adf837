"""The Pareto figure's points: every method's models joined with their accuracy, and the front."""
import pandas as pd

from nuwa.paper.pareto import pareto_points
from nuwa.paper.table3 import BASE_FULL, BASE_SLICED


def _bench():
    rows = [dict(base="b", subtask=None, method=None, alpha=None, flops=100, latency_ms_median=10.0, error=None)]
    for method, alpha, flops, ms in [("nuwa", 0.4, 60, 5.0), ("nuwa", 0.8, 20, 2.0), ("nvit", 0.4, 60, 8.0),
                                     ("nvit", 0.8, 20, 7.0), ("random", 0.4, 60, 8.0)]:
        rows.append(dict(base="b", subtask="H1", method=method, alpha=alpha, flops=flops, latency_ms_median=ms,
                         error=None))
    rows.append(dict(base="b", subtask="H1", method="xpruner", alpha=0.4, flops=60, latency_ms_median=None,
                     error="onnx missing"))
    return pd.DataFrame(rows)


def _long():
    rows = [dict(base="b", subtask="H1", method=BASE_FULL, alpha=0.0, seed=None, top1=0.70, rate_achieved=0.0),
            dict(base="b", subtask="H1", method=BASE_SLICED, alpha=0.0, seed=None, top1=0.72, rate_achieved=0.0)]
    for seed, shift in ((0, 0.0), (1, -0.5)):  # the second seed must not be joined
        for method, alpha, top1 in [("nuwa", 0.4, 0.71), ("nuwa", 0.8, 0.60), ("nvit", 0.4, 0.73), ("nvit", 0.8, 0.65),
                                    ("random", 0.4, 0.60), ("xpruner", 0.4, 0.69)]:
            rows.append(dict(base="b", subtask="H1", method=method, alpha=alpha, seed=seed, top1=top1 + shift,
                             rate_achieved=alpha + 0.001))
    return pd.DataFrame(rows)


def test_every_timed_model_is_a_point_with_its_first_seed_accuracy_and_the_base_is_the_reference():
    p = pareto_points(_bench(), _long())
    assert len(p) == 6  # five timed edge models and the base; the failed timing is left out
    assert set(p.method) == {"nuwa", "nvit", "random", BASE_SLICED}
    row = p[(p.method == "nvit") & (p.alpha == 0.4)].iloc[0]
    assert row.top1 == 0.73 and row.latency_ms == 8.0 and row.flops == 60
    base = p[p.method == BASE_SLICED].iloc[0]
    assert base.top1 == 0.72 and base.latency_ms == 10.0 and base.rate_achieved == 0.0


def test_the_front_holds_the_points_nothing_beats_in_both_accuracy_and_latency():
    p = pareto_points(_bench(), _long()).set_index(["method", "alpha"])
    assert p.loc[("nuwa", 0.8), "on_front"]  # fastest
    assert p.loc[("nuwa", 0.4), "on_front"]  # nothing faster is as accurate
    assert p.loc[("nvit", 0.4), "on_front"]  # most accurate of the edge models, faster than the base
    assert not p.loc[("nvit", 0.8), "on_front"]  # nuwa 0.4 is faster and more accurate
    assert not p.loc[("random", 0.4), "on_front"]  # nvit 0.4: as fast, more accurate
