"""Depth pruning: per-layer classifiers sliced to the sub-task and the early-exit rule."""
import pytest
import torch

from nuwa import layer_classifiers as lh


@pytest.mark.parametrize(
    "accs, rho, keep",
    [
        ([0.50, 0.80, 0.90, 0.95, 1.00], 0.95, 4),  # 0.95 >= 0.95: drop the last; 0.90 < 0.95: stop
        ([0.50, 0.80, 0.96, 0.97, 1.00], 0.95, 3),
        ([0.99, 0.20, 0.99, 0.99, 1.00], 0.95, 3),  # stops at the first failure (0.20), never skips it
        ([0.10, 0.20, 0.30, 0.40, 1.00], 0.95, 5),
        ([1.00, 1.00, 1.00], 0.95, 1),
        ([0.60, 0.70, 0.80], 0.50, 1),
        ([0.9], 0.95, 1),
    ],
)
def test_depth_rule_on_hand_made_accuracies(accs, rho, keep):
    assert lh.choose_depth(accs, rho) == keep


def test_sliced_accuracies_use_only_the_subtask_rows():
    torch.manual_seed(0)
    d = 4
    feats = [torch.eye(d)[[0, 1, 2, 3]] * 5]  # sample i points along axis i
    head = {"norm.weight": torch.ones(d), "norm.bias": torch.zeros(d), "head.weight": torch.eye(d),
            "head.bias": torch.tensor([0.0, 0.0, 0.0, 100.0])}  # class 3 would win everything
    labels = torch.tensor([0, 1])  # positions in classes [0, 1]
    assert lh.accuracies([feats[0][:2]], labels, [head], classes=[0, 1]) == [1.0]
    assert lh.accuracies([feats[0][:2]], labels, [head], classes=[3, 1]) == [0.5]


def test_cache_round_trip_and_staleness(tmp_path):
    heads = [{k: torch.randn(3, 2) if k == "head.weight" else torch.randn(3 if k == "head.bias" else 2)
              for k in lh.KEYS} for _ in range(2)]
    path = tmp_path / lh.FILE
    lh.save(path, heads, key="base-a", meta={})
    back = lh.load(path, key="base-a")
    assert all(torch.equal(a[k], b[k]) for a, b in zip(heads, back) for k in lh.KEYS)
    assert lh.load(path, key="base-b") is None  # other base weights: retrain
    assert lh.load(tmp_path / "absent.safetensors", key="x") is None
    path.write_bytes(b"garbage")
    with pytest.raises(Exception, match="corrupt layer-classifier cache"):
        lh.load(path, key="base-a")
