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


def _linear_cost(depth: int, fixed: float = 0.05):
    """A model whose cost is `fixed` (patch embedding, classifier) plus an equal share per layer."""
    return lambda k: fixed + (1 - fixed) * k / depth


@pytest.mark.parametrize(
    "accs, alpha, rule, keep",
    [
        # A simple sub-task: the rule keeps 1 of 12 layers at any rate; the budget policy keeps the
        # fewest layers that still cost at least what was asked (the adaptive stage trims the rest).
        ([1.0] * 12, 0.2, 1, 10),  # 9 layers would cost 0.76 < 0.80: too cheap
        ([1.0] * 12, 0.6, 1, 5),
        ([1.0] * 12, 0.8, 1, 2),
        # A hard sub-task: the rule keeps more layers than the budget needs; they stay.
        ([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.97, 1.0], 0.6, 10, 10),
        # One layer overshoots: 3 layers would cost 0.46, below the 0.50 asked, so the 4th stays
        # (0.59), though the rule would drop it.
        ([0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 1.0], 0.5, 1, 4),
    ],
)
def test_budget_policy_never_cuts_past_the_requested_cost(accs, alpha, rule, keep):
    cost = _linear_cost(len(accs))
    assert lh.choose_depth(accs, 0.95) == rule
    chosen = lh.budget_depth(rule, len(accs), lambda k: cost(k) <= 1 - alpha)
    assert chosen == keep
    assert cost(chosen) > 1 - alpha or chosen == len(accs)  # never below the requested cost
    assert chosen == rule or cost(chosen - 1) <= 1 - alpha  # and no more layers than that needs


def test_budget_policy_keeps_every_layer_when_even_the_whole_model_fits():
    assert lh.budget_depth(2, 5, lambda k: True) == 5


def test_budget_policy_rejects_an_impossible_rule():
    with pytest.raises(ValueError, match="6 layers of 5"):
        lh.budget_depth(6, 5, lambda k: True)


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
