"""The ledger's statistics: intervals on synthetic accuracies whose answer is known, the
multiplicity correction and the labels of what an interval covers (coverage: test_coverage.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nuwa.paper.stats import (CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_MEASURED, Interval, all_of, crossed_interval,
                              decide, holm, pack_correct, paired_bootstrap, t_quantile, t_sf, two_sample_bootstrap,
                              unpack_correct, verdict, verdict_of)


def correct(p: float, n: int, seed: int, seeds: int = 1) -> np.ndarray:
    """0/1 correctness of a model of accuracy p on n images, (seeds, n)."""
    return np.random.default_rng(seed).random((seeds, n)) < p


def test_a_clear_win_a_clear_loss_and_a_tie_get_their_verdicts():
    n = 2000
    a, b = correct(0.85, n, 1), correct(0.70, n, 2)
    win = crossed_interval([(a, b)])
    assert verdict_of(win) == HOLDS and win.lo > 0.1 and win.lo < win.estimate < win.hi
    assert verdict_of(crossed_interval([(b, a)])) == CONTRADICTED
    assert verdict_of(win, direction=-1) == CONTRADICTED  # the claim "A below B" is contradicted by a win
    tie = crossed_interval([(correct(0.8, n, 3), correct(0.8, n, 4))])
    assert verdict_of(tie) == INCONCLUSIVE and tie.lo < 0 < tie.hi
    same = crossed_interval([(a, a)])  # identical predictions: a zero-width interval at 0 decides nothing
    assert (same.estimate, same.lo, same.hi) == (0.0, 0.0, 0.0) and verdict_of(same) == INCONCLUSIVE


def test_the_interval_narrows_with_more_images():
    widths = []
    for n in (200, 2000, 20000):
        iv = crossed_interval([(correct(0.8, n, 5), correct(0.75, n, 6))])
        widths.append(iv.hi - iv.lo)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~1/sqrt(n): each step 10x the images, ~3x narrower


def test_pairing_makes_a_difference_on_few_images_precise():
    """Two models that agree on every image but 30 (all in A's favour) differ by 1.5 points for
    sure; the same accuracies without pairing (independent errors) would be noise at n = 2000."""
    n = 2000
    b = correct(0.7, n, 7)[0]
    a = b.copy()
    a[np.flatnonzero(~b)[:30]] = True
    paired = crossed_interval([(a, b)])
    assert verdict_of(paired) == HOLDS and paired.hi - paired.lo < 0.015
    unpaired = two_sample_bootstrap(a, b)
    assert verdict_of(unpaired) == INCONCLUSIVE and unpaired.hi - unpaired.lo > 2 * (paired.hi - paired.lo)
    assert paired.estimate == pytest.approx(unpaired.estimate) == pytest.approx(30 / n)


def test_seed_to_seed_spread_widens_the_interval():
    """A's accuracy swings between seeds (0.72 or 0.88): with two seeds the interval must reflect it,
    so the same mean lead is less certain than with seeds that agree."""
    n = 3000
    b = correct(0.75, n, 8, seeds=2)
    steady = np.stack([correct(0.80, n, 9)[0], correct(0.80, n, 10)[0]])
    swinging = np.stack([correct(0.72, n, 9)[0], correct(0.88, n, 10)[0]])
    w_steady = crossed_interval([(steady, b)])
    w_swing = crossed_interval([(swinging, b)])
    assert w_swing.hi - w_swing.lo > 2 * (w_steady.hi - w_steady.lo)
    assert verdict_of(w_steady) == HOLDS


def test_cells_weigh_the_same_and_a_one_seed_side_broadcasts():
    a1, b1 = np.ones((2, 10)), np.zeros(10)  # a base model (one vector) vs two seeds of an edge model
    a2, b2 = np.zeros(1000), np.zeros(1000)
    iv = crossed_interval([(a1, b1), (a2, b2)])
    assert iv.estimate == 0.5 and iv.lo == iv.hi == 0.5  # (1 + 0) / 2, whatever the cells' sizes
    with pytest.raises(ValueError):
        crossed_interval([(np.ones(10), np.ones(11))])
    with pytest.raises(ValueError):
        crossed_interval([])


def test_the_intervals_are_deterministic():
    cells = [(correct(0.8, 4000, i, seeds=3), correct(0.78, 4000, 100 + i, seeds=3)) for i in range(8)]
    assert crossed_interval(cells) == crossed_interval(cells)
    assert paired_bootstrap(cells[:1]) == paired_bootstrap(cells[:1])
    assert paired_bootstrap(cells[:1], seed=1) != paired_bootstrap(cells[:1])  # the seed is what fixes it
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


# ---- the seed-by-image interval --------------------------------------------------------------------
def test_students_t_matches_its_tables():
    for df, q in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (10, 2.2281), (30, 2.0423), (math.inf, 1.9600)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_sf(2.0, 5) == pytest.approx(0.050970, abs=1e-6) and t_sf(0.0, 3) == pytest.approx(0.5)
    assert t_sf(-1.0, 3) == pytest.approx(1 - t_sf(1.0, 3))


def test_three_seeds_that_disagree_give_a_t_interval_on_their_means():
    """Per-seed differences of -10.6, +1.2 and -2.0 points on many images (the pretrained study's
    H1 at alpha 0.4, NuWa - NViT): the interval is the t-interval with 2 degrees of freedom on
    those three means, and decides nothing."""
    n = 4000
    base = correct(0.6, n, 11, seeds=3).astype(float)
    a = base.copy()
    for s, d in enumerate((-0.106, 0.012, -0.020)):  # move d * n images from right to wrong or back
        k = int(round(abs(d) * n))
        idx = np.flatnonzero(a[s] == (1.0 if d < 0 else 0.0))[:k]
        a[s, idx] = 0.0 if d < 0 else 1.0
    iv = crossed_interval([(a, base)])
    per_seed = (a - base).mean(1)
    t_half = t_quantile(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
    assert iv.seeds == 3 and iv.df == 2
    assert iv.estimate == pytest.approx(per_seed.mean())
    assert iv.hi - iv.lo == pytest.approx(2 * t_half, rel=0.02)  # images add little beside such seeds
    assert verdict_of(iv) == INCONCLUSIVE and iv.lo < -0.12 and iv.hi > 0.03


def test_one_seed_covers_images_only_and_says_so():
    a, b = correct(0.85, 3000, 1), correct(0.80, 3000, 2)
    iv = crossed_interval([(a, b)])
    assert iv.seeds == 1 and math.isinf(iv.df)
    d = a[0].astype(float) - b[0]
    assert iv.hi - iv.lo == pytest.approx(2 * 1.959964 * d.std(ddof=1) / np.sqrt(d.size), rel=1e-6)


def test_the_p_value_is_the_level_at_which_the_interval_touches_zero():
    a, b = correct(0.8, 4000, 3, seeds=3), correct(0.78, 4000, 4, seeds=3)
    iv = crossed_interval([(a, b)])
    assert 0 < iv.p < 1
    edge = crossed_interval([(a, b)], level=1 - iv.p)
    assert min(abs(edge.lo), abs(edge.hi)) < 1e-9
    assert (iv.p < 0.05) == (verdict_of(iv) != INCONCLUSIVE)


def test_cells_sharing_images_enter_once():
    """Two cells on the same images (one sub-task at two rates): with the image ids the pooled
    array has the images once; the estimate is the same either way."""
    a1, b1 = correct(0.8, 1000, 5, seeds=3), correct(0.7, 1000, 6, seeds=3)
    a2, b2 = correct(0.75, 1000, 7, seeds=3), correct(0.7, 1000, 8, seeds=3)
    ids = np.arange(1000)
    joint = crossed_interval([(a1, b1), (a2, b2)], images=[ids, ids])
    apart = crossed_interval([(a1, b1), (a2, b2)])
    assert joint.estimate == pytest.approx(apart.estimate)
    with pytest.raises(ValueError):
        crossed_interval([(a1, b1)], images=[ids[:10]])  # one id per image
    with pytest.raises(ValueError):
        crossed_interval([(a1, b1), (a2[:2], b2[:2])])  # cells of 3 and 2 seeds cannot be matched


# ---- claims of several comparisons -----------------------------------------------------------------
def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert holm([0.001, 0.9]) == pytest.approx([0.002, 0.9])


def test_a_contradiction_among_several_comparisons_must_survive_holm():
    """Twelve cells, one of them just below zero at 5 %: alone it would contradict the claim, after
    Holm's correction over twelve it does not; a clear contradiction still does."""
    weak = Interval(-0.01, -0.019, -0.001, p=0.03, seeds=3)
    tie = Interval(0.005, -0.005, 0.015, p=0.3, seeds=3)
    clear = Interval(-0.05, -0.06, -0.04, p=1e-6, seeds=3)
    win = Interval(0.02, 0.01, 0.03, p=0.001, seeds=3)
    assert decide([weak] + [tie] * 11) == [INCONCLUSIVE] * 12  # 12 x 0.03 > 0.05
    assert all_of(decide([clear] + [tie] * 11)) == CONTRADICTED
    assert decide([weak] + [win] * 11) == [CONTRADICTED] + [HOLDS] * 11  # Holm's last step: 1 x 0.03
    assert decide([weak]) == [CONTRADICTED]  # one comparison: no correction
    assert decide([win, None]) == [HOLDS, NOT_MEASURED]
    boot = Interval(0.02, 0.01, 0.03)  # no p-value (a bootstrap over units): keeps its own verdict
    assert decide([boot, weak]) == [HOLDS, CONTRADICTED]
