"""The claims ledger: each claim of the paper, what our run measured, and a verdict.

Every claim is a comparison (or several) decided the same way (`nuwa.paper.stats`): a paired
95 % interval of the difference over test images and seeds (seeds with Student's t) holds it when
it excludes 0 in the claimed direction, contradicts it when it excludes 0 in the other, and leaves
it inconclusive otherwise; a claim of several comparisons is contradicted only under Holm's
correction. Methods are compared only at equal cost (`compare.RATE_TOLERANCE`). A
table that was not built leaves its claims "not measured" rather than dropping them. Nothing here
is tuned: a claim our scale does not support is reported so.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

import pandas as pd

from .claims_ablations import ablation_claims, fig2_claim, fig8_claim, neuron_claim  # noqa: F401  (the ledger's API)
from .compare import RATE_TOLERANCE, Claim, Result, compare, corrected, equal_cost, every_cell, make, missing, pair
from .stats import CONTRADICTED, HOLDS, INCONCLUSIVE, NOT_MEASURED, two_sample_bootstrap, verdict_of
from .table3 import BASE_FULL, BASE_SLICED

CELL = ["base", "subtask", "alpha"]
RULE = ("A claim holds when the paired 95 % interval of the difference excludes 0 in the claimed direction, is "
        "contradicted when it excludes 0 in the other direction, and is inconclusive otherwise. The interval treats "
        "seeds and test images as random: the spread of the per-seed differences with Student's t on seeds - 1 "
        "degrees of freedom, plus what the images add (docs/method.md, \"Verdicts\"); a pooled comparison counts "
        "the seeds and images its cells share once. A claim of several comparisons holds when every one holds and "
        "is contradicted only when one is contradicted after Holm's correction. \"1 seed: images only\" marks an "
        "interval that cannot include the seed-to-seed spread. Methods are compared only where their achieved "
        f"rates differ by at most {RATE_TOLERANCE:g}.")


def subtask_test_images(samples: Mapping[tuple[str, str], str]) -> dict[str, np.ndarray]:
    """Sub-task -> the indices in its data set of its test images, in evaluation order, from each
    (dataset, sub-task)'s samples.parquet; a sub-task name two data sets share is left out (its
    cells then count their images as their own)."""
    images, datasets = {}, {}
    for (dataset, subtask), path in samples.items():
        datasets.setdefault(subtask, set()).add(dataset)
        s = pd.read_parquet(path, columns=["split", "index"])
        images[subtask] = s.loc[s.split == "test", "index"].to_numpy()
    return {t: ids for t, ids in images.items() if len(datasets[t]) == 1}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _derived(long: pd.DataFrame) -> pd.DataFrame:
    return long[~long.method.isin((BASE_FULL, BASE_SLICED))]


def baselines(long: pd.DataFrame) -> list[str]:
    """The baselines in the table: every derivation method but NuWa and its variants (nuwa-*)."""
    return sorted(m for m in set(_derived(long).method) if not str(m).startswith("nuwa"))


# ---- Table 3 and Fig. 4 ----------------------------------------------------------------------
def nuwa_beats_baselines(long: pd.DataFrame, kind: str | None, alpha: float | None, images=None) -> Claim:
    where = (f"{kind} sub-tasks" if kind else "all sub-tasks") + (f" at alpha = {alpha:g}" if alpha else
                                                                  ", pooled over every alpha")
    cid = f"table3-nuwa-best-{kind or 'all'}-{alpha:g}" if alpha else f"table3-nuwa-best-{kind or 'all'}"
    others = baselines(long)
    statement = f"NuWa beats every baseline ({', '.join(others) or 'none ran'}) on {where}, at equal cost"
    rows = _derived(long)
    if kind is not None:
        rows = rows[rows.kind == kind]
    if alpha is not None:
        rows = rows[(rows.alpha - alpha).abs() < 1e-9]
    nuwa = rows[rows.method == "nuwa"]
    if nuwa.empty or not others:
        return missing(cid, "Table 3", statement, "no NuWa and baseline derivation here")
    results = [compare(pair(nuwa, rows[rows.method == m], CELL, images=images), f"nuwa vs {m}") for m in others]
    return make(cid, "Table 3", statement, results)


def _base_cells(long: pd.DataFrame, method: str, base: str, max_alpha: float | None) -> tuple:
    rows = long[long.method == method]
    if max_alpha is not None:
        rows = rows[rows.alpha <= max_alpha + 1e-9]
    return pair(rows, long[long.method == base], CELL, ["base", "subtask"], rate_tolerance=None), rows


def edge_beats_base(long: pd.DataFrame, base: str, max_alpha: float = 0.6) -> Claim:
    which = "full" if base == BASE_FULL else "sliced"
    statement = (f"a NuWa edge ViT beats the base with its {which} classifier on its sub-task at every "
                 f"alpha <= {max_alpha:g}")
    cid = f"table3-edge-beats-base-{which}"
    p, rows = _base_cells(long, "nuwa", base, max_alpha)
    if rows.empty or not (long.method == base).any():
        return missing(cid, "Table 3, Sec. 1", statement, "no NuWa derivation at these rates or no base evaluation")
    if not p.cells:
        return missing(cid, "Table 3, Sec. 1", statement, p.why_none())
    results = corrected(every_cell(p, "nuwa - base", lambda k: f"{k[1]} alpha {k[2]:g}"))
    return make(cid, "Table 3, Sec. 1", statement, results, prefix=_tally(results))


def _tally(results: list[Result]) -> str:
    """How many of the (Holm-corrected) per-cell verdicts hold, are contradicted, inconclusive."""
    n = {v: sum(r.verdict == v for r in results) for v in (HOLDS, CONTRADICTED, INCONCLUSIVE)}
    return f"{n[HOLDS]} of {len(results)} hold, {n[CONTRADICTED]} contradicted, {n[INCONCLUSIVE]} inconclusive"


def sliced_beats_full(long: pd.DataFrame) -> Claim:
    statement = "slicing the base's classifier to the sub-task's classes raises its accuracy on every sub-task"
    cid = "fig4-sliced-beats-full"
    sliced, full = long[long.method == BASE_SLICED], long[long.method == BASE_FULL]
    if full.empty:
        return missing(cid, "Fig. 4", statement, "no base evaluation")
    p = pair(sliced, full, ["base", "subtask"], rate_tolerance=None)
    if not p.cells:
        return missing(cid, "Fig. 4", statement, p.why_none())
    results = corrected(every_cell(p, "sliced - full", lambda k: k[1]))
    return make(cid, "Fig. 4", statement, results, prefix=_tally(results))


def nuwa_derives_faster(long: pd.DataFrame, other: str = "xpruner") -> Claim:
    statement = f"NuWa derives an edge ViT faster than {other} (pruning only, recovery excluded)"
    cid, source = f"cost-nuwa-faster-than-{other}", "derivation cost (later NuWa paper: 33.69x)"
    rows = _derived(long)
    nuwa, them = rows[rows.method == "nuwa"], rows[rows.method == other]
    if nuwa.empty or them.empty:
        return missing(cid, source, statement, f"{other} did not run")
    # Seconds of derivations at equal cost only: reaching a lower rate is cheaper for any method.
    rate = lambda g: g.groupby(CELL).rate_achieved.mean()  # noqa: E731
    ra, rb = rate(nuwa), rate(them)
    both = ra.index.intersection(rb.index)
    equal = both[equal_cost(ra[both], rb[both])]
    if not len(equal):
        return missing(cid, source, statement, f"no cell at equal cost ({len(both)} left out)")
    pick = lambda g: g.set_index(CELL).loc[list(equal)].derive_seconds.astype(float)  # noqa: E731
    a, b = pick(nuwa), pick(them)
    iv = two_sample_bootstrap(a, b)  # runs, not images: unpaired
    left = f", {len(both) - len(equal)} left out (achieved rates differ by more than {RATE_TOLERANCE:g})" \
        if len(both) > len(equal) else ""
    return Claim(cid, source, statement, verdict_of(iv, -1),
                 f"nuwa - {other} {iv.plain(' s', '+.1f')} per derivation (nuwa {a.mean():.1f} s, {other} "
                 f"{b.mean():.1f} s, {b.mean() / a.mean():.2f}x; {len(equal)} cell{'s' if len(equal) != 1 else ''} compared{left})",
                 (iv.lo, iv.hi, iv.estimate))


def table3_claims(long: pd.DataFrame, images=None) -> list[Claim]:
    """`images`: sub-task -> its test images' indices in the data set (pooled claims count the
    images their cells share once); None treats every cell's images as its own."""
    claims = [nuwa_beats_baselines(long, kind, 0.8, images) for kind in ("hard", "simple")]
    claims.append(nuwa_beats_baselines(long, None, None, images))
    claims += [edge_beats_base(long, BASE_FULL), edge_beats_base(long, BASE_SLICED), sliced_beats_full(long)]
    claims.append(nuwa_derives_faster(long))
    return claims


# ---- the ledger ---------------------------------------------------------------------------------
def ledger(long: pd.DataFrame, extra: list[Callable[[], list[Claim]]] = (), images=None) -> list[Claim]:
    """Table 3's claims, then those of each `extra` producer (ablations, neurons, Fig. 2)."""
    claims = table3_claims(long, images)
    for more in extra:
        claims += more()
    return claims


VERDICTS = (HOLDS, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)


def to_markdown(claims: list[Claim], *, title: str) -> str:
    n = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    lines = [f"# {title}", "",
             f"{len(claims)} claims: {n[HOLDS]} hold, {n[CONTRADICTED]} contradicted, {n[INCONCLUSIVE]} inconclusive, "
             f"{n[NOT_MEASURED]} not measured.", "", RULE,
             "", "| claim | paper | verdict | seeds | measured |", "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {c.statement} | {c.source} | **{c.verdict}** | {_seeds(c.seeds)} | {c.measured} |")
    return "\n".join(lines) + "\n"


def _seeds(n) -> str:
    """The seeds column: how many seeds the weakest comparison of a claim rests on."""
    if n is None or (isinstance(n, float) and n != n):
        return "-"
    return "1 (images only)" if int(n) == 1 else str(int(n))


README_BEGIN, README_END = "<!-- claims: generated from results/default/claims.csv -->", "<!-- claims: end -->"


def readme_section(frame: pd.DataFrame) -> str:
    """The README's claims section, written from a ledger's frame (claims.csv), never by hand:
    the verdict counts, then one line per claim with its interval. `scripts/readme_claims.py`
    puts it between README_BEGIN and README_END."""
    n = {v: int((frame.verdict == v).sum()) for v in VERDICTS}
    lines = [README_BEGIN, f"Of {len(frame)} claims, {n[HOLDS]} hold, {n[CONTRADICTED]} are contradicted, "
             f"{n[INCONCLUSIVE]} are inconclusive and {n[NOT_MEASURED]} are not measured (95 % intervals over "
             "test images and seeds, seeds with Student's t; Holm's correction where a claim makes several "
             "comparisons; methods compared at equal cost only).", ""]
    for r in frame.itertuples():
        one = " *One seed: the interval covers images only.*" if _seeds(getattr(r, "seeds", None)).startswith("1 ") else ""
        lines.append(f"- **{r.verdict}**: {r.statement} ({r.source}).{one} {r.measured}")
    return "\n".join(lines + ["", README_END])


COMPARE_BEGIN = "<!-- claims by profile: generated from results/*/claims.csv -->"
COMPARE_END = "<!-- claims by profile: end -->"


def comparison_section(frames: dict[str, pd.DataFrame], labels: dict[str, str] | None = None) -> str:
    """The README's side-by-side ledger: one row per claim, the verdict of each profile's
    claims.csv in its column (frames: profile -> ledger frame, in column order)."""
    labels = labels or {}
    names = list(frames)
    order = list(dict.fromkeys(i for f in frames.values() for i in f["id"]))
    by_id = {n: f.set_index("id") for n, f in frames.items()}
    lines = [COMPARE_BEGIN, "| claim | source | " + " | ".join(labels.get(n, n) for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for cid in order:
        row = next(by_id[n].loc[cid] for n in names if cid in by_id[n].index)
        cells = [f"**{by_id[n].loc[cid, 'verdict']}**"
                 + (" (1 seed)" if _seeds(by_id[n].loc[cid].get("seeds")).startswith("1 ") else "")
                 if cid in by_id[n].index else "-" for n in names]
        lines.append(f"| {row['statement']} | {row['source']} | " + " | ".join(cells) + " |")
    counts = [f"{labels.get(n, n)}: " + ", ".join(f"{int((f.verdict == v).sum())} {v}" for v in VERDICTS)
              for n, f in frames.items()]
    return "\n".join(lines + ["", "; ".join(counts) + ".", COMPARE_END])


def to_frame(claims: list[Claim]) -> pd.DataFrame:
    iv = lambda c, i: None if c.interval is None else round(float(c.interval[i]), 6)  # noqa: E731
    return pd.DataFrame([dict(id=c.id, source=c.source, statement=c.statement, verdict=c.verdict,
                              estimate=iv(c, 2), ci_low=iv(c, 0), ci_high=iv(c, 1), seeds=c.seeds, measured=c.measured)
                         for c in claims],
                        columns=["id", "source", "statement", "verdict", "estimate", "ci_low", "ci_high", "seeds",
                                 "measured"]).astype({"seeds": "Int64"})
