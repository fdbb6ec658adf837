"""The ledger's statistics: bootstrap intervals on synthetic accuracies whose answer is known."""
from __future__ import annotations

import time

import numpy as np
import pytest

from nuwa.paper.stats import (CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_MEASURED, all_of, pack_correct,
                              paired_bootstrap, two_sample_bootstrap, unpack_correct, verdict, verdict_of)


def correct(p: float, n: int, seed: int, seeds: int = 1) -> np.ndarray:
    """0/1 correctness of a model of accuracy p on n images, (seeds, n)."""
    return np.random.default_rng(seed).random((seeds, n)) < p


def test_a_clear_win_a_clear_loss_and_a_tie_get_their_verdicts():
    n = 2000
    a, b = correct(0.85, n, 1), correct(0.70, n, 2)
    win = paired_bootstrap([(a, b)])
    assert verdict_of(win) == HOLDS and win.lo > 0.1 and win.lo < win.estimate < win.hi
    assert verdict_of(paired_bootstrap([(b, a)])) == CONTRADICTED
    assert verdict_of(win, direction=-1) == CONTRADICTED  # the claim "A below B" is contradicted by a win
    tie = paired_bootstrap([(correct(0.8, n, 3), correct(0.8, n, 4))])
    assert verdict_of(tie) == INCONCLUSIVE and tie.lo < 0 < tie.hi
    same = paired_bootstrap([(a, a)])  # identical predictions: a zero-width interval at 0 decides nothing
    assert (same.estimate, same.lo, same.hi) == (0.0, 0.0, 0.0) and verdict_of(same) == INCONCLUSIVE


def test_the_interval_narrows_with_more_images():
    widths = []
    for n in (200, 2000, 20000):
        iv = paired_bootstrap([(correct(0.8, n, 5), correct(0.75, n, 6))])
        widths.append(iv.hi - iv.lo)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~1/sqrt(n): each step 10x the images, ~3x narrower


def test_pairing_makes_a_difference_on_few_images_precise():
    """Two models that agree on every image but 30 (all in A's favour) differ by 1.5 points for
    sure; the same accuracies without pairing (independent errors) would be noise at n = 2000."""
    n = 2000
    b = correct(0.7, n, 7)[0]
    a = b.copy()
    a[np.flatnonzero(~b)[:30]] = True
    paired = paired_bootstrap([(a, b)])
    assert verdict_of(paired) == HOLDS and paired.hi - paired.lo < 0.015
    unpaired = two_sample_bootstrap(a, b)
    assert verdict_of(unpaired) == INCONCLUSIVE and unpaired.hi - unpaired.lo > 2 * (paired.hi - paired.lo)
    assert paired.estimate == pytest.approx(unpaired.estimate) == pytest.approx(30 / n)


def test_seeds_are_resampled_so_seed_to_seed_spread_widens_the_interval():
    """A's accuracy swings between seeds (0.72 or 0.88): with two seeds the interval must reflect it,
    so the same mean lead is less certain than with seeds that agree."""
    n = 3000
    b = correct(0.75, n, 8, seeds=2)
    steady = np.stack([correct(0.80, n, 9)[0], correct(0.80, n, 10)[0]])
    swinging = np.stack([correct(0.72, n, 9)[0], correct(0.88, n, 10)[0]])
    w_steady = paired_bootstrap([(steady, b)])
    w_swing = paired_bootstrap([(swinging, b)])
    assert w_swing.hi - w_swing.lo > 2 * (w_steady.hi - w_steady.lo)
    assert verdict_of(w_steady) == HOLDS


def test_cells_weigh_the_same_and_a_one_seed_side_broadcasts():
    a1, b1 = np.ones((2, 10)), np.zeros(10)  # a base model (one vector) vs two seeds of an edge model
    a2, b2 = np.zeros(1000), np.zeros(1000)
    iv = paired_bootstrap([(a1, b1), (a2, b2)])
    assert iv.estimate == 0.5 and iv.lo == iv.hi == 0.5  # (1 + 0) / 2, whatever the cells' sizes
    with pytest.raises(ValueError):
        paired_bootstrap([(np.ones(10), np.ones(11))])
    with pytest.raises(ValueError):
        paired_bootstrap([])


def test_the_bootstrap_is_deterministic_and_fast():
    cells = [(correct(0.8, 4000, i, seeds=3), correct(0.78, 4000, 100 + i, seeds=3)) for i in range(8)]
    t = time.perf_counter()
    first = paired_bootstrap(cells)
    assert time.perf_counter() - t < 20  # 8 cells x 3 seeds x 4000 images x 2000 replicates
    assert paired_bootstrap(cells) == first
    assert paired_bootstrap(cells, seed=1) != first  # the seed is what fixes it
    x, y = np.arange(50.0), np.arange(50.0) + 5
    assert two_sample_bootstrap(x, y) == two_sample_bootstrap(x, y)


def test_two_sample_bootstrap_over_units():
    rng = np.random.default_rng(0)
    shallow, deep = rng.poisson(6, 384) + 1, rng.poisson(3, 384) + 1  # distinct classes per neuron
    iv = two_sample_bootstrap(deep, shallow)
    assert verdict_of(iv, direction=-1) == HOLDS and iv.estimate == pytest.approx(deep.mean() - shallow.mean())
    assert verdict_of(two_sample_bootstrap(shallow[:192], shallow[192:])) == INCONCLUSIVE


def test_verdict_rule_and_combinator():
    assert verdict(0.01, 0.03) == HOLDS and verdict(-0.03, -0.01) == CONTRADICTED and verdict(-0.01, 0.02) == INCONCLUSIVE
    assert verdict(-0.03, -0.01, -1) == HOLDS and verdict(0.01, 0.03, -1) == CONTRADICTED
    assert verdict(0.0, 0.02) == INCONCLUSIVE  # touching 0 does not exclude it
    with pytest.raises(ValueError):
        verdict(0, 1, 0)
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([HOLDS, INCONCLUSIVE, CONTRADICTED]) == CONTRADICTED
    assert all_of([HOLDS, NOT_MEASURED]) == INCONCLUSIVE  # one comparison missing: not all shown
    assert all_of([]) == NOT_MEASURED and all_of([NOT_MEASURED]) == NOT_MEASURED


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 4001])
def test_correctness_packs_and_unpacks(n):
    c = np.random.default_rng(n).random(n) < 0.5
    packed = pack_correct(c)
    assert isinstance(packed, str) and len(packed) < n / 5 + 16
    out = unpack_correct(packed)
    assert out.dtype == bool and np.array_equal(out, c)
