# Parameters and helpers of the ablation rules (rules/ablation.smk): the params.yaml `ablations:`
# section checked, the variants (DeriveOptions changes) and the runs and targets they make.
# Functions live here, rules there (snakemake --lint: no mixing).
A = P["ablations"]
A_BASE = A.get("base") or next(iter(BASES))
A_SWEEP = A["sweep"]
A_SWEEP_BASE = A_SWEEP.get("base") or A_BASE
A_SEED = A["seed"] if "seed" in A else P["seeds"][0]
A_FINETUNE = dict(A["finetune"]) if "finetune" in A else {}
A_FINETUNE.setdefault("epochs", P["finetune"]["epochs"])
A_EVAL = dict(A["eval"]) if "eval" in A else dict(P["eval"])
for _what, _b in (("base", A_BASE), ("sweep.base", A_SWEEP_BASE)):
    if _b not in BASES:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.ablations.{_what}: {_b!r} is not one of the profile's "
                            f"bases ({', '.join(BASES)})")
A_SUBTASKS = A.get("subtasks") or BASES[A_BASE]["subtasks"][:1]
A_GAMMA = A["gamma"]
A_GAMMA_SUBTASKS = A_GAMMA.get("subtasks") or A_SUBTASKS
for _key, _b, _names in (("subtasks", A_BASE, A_SUBTASKS), ("subtasks", A_SWEEP_BASE, A_SUBTASKS),
                         ("gamma.subtasks", A_BASE, A_GAMMA_SUBTASKS)):
    _bad = [s for s in _names if s not in SUBTASKS[BASES[_b]["dataset"]]]
    if _bad:
        raise WorkflowError(f"params.yaml: profiles.{PROFILE}.ablations.{_key}: {_bad} not defined for the data set "
                            f"of base {_b} ({DATASETS[BASES[_b]['dataset']]['subtasks']})")
A_ALPHA = f"{A['alpha']:g}"
A_GAMMA_ALPHA = f"{A_GAMMA['alpha']:g}"
from nuwa.options import DEFAULT_GAMMA_RATIO  # AdaptiveOptions' default (the paper's 1 : 5 : 2.5)


def _gamma_variant(exp, emb):
    ratio = (1.0, float(exp), float(emb))
    return "full" if ratio == DEFAULT_GAMMA_RATIO else f"gamma-e{exp:g}-d{emb:g}"


# Variant name -> the DeriveOptions it changes (over the profile's `derive:`).
A_VARIANTS = {
    "full": {},
    **{f"no-{d}": dict(adaptive=dict(exclude=[d])) for d in ("qk", "v", "mlp", "embed")},
    "fixed-rate": dict(adaptive=dict(global_ranking=False)),
    "score": dict(svd="off"),
    "fixed-rate-score": dict(svd="off", adaptive=dict(global_ranking=False)),
}
A_GRID = [(e, d) for e in A_GAMMA["exp"] for d in A_GAMMA["emb"]]
A_VARIANTS.update({_gamma_variant(e, d): dict(adaptive=dict(gamma_ratio=[1.0, float(e), float(d)]))
                   for e, d in A_GRID if _gamma_variant(e, d) != "full"})
TABLE5_VARIANTS = ["full", "no-qk", "no-v", "no-mlp", "no-embed"]
TABLE6_VARIANTS = ["full", "fixed-rate", "score", "fixed-rate-score"]
FIG7_VARIANTS = sorted({_gamma_variant(e, d) for e, d in A_GRID})


def ablation_options(variant):
    """The profile's derive options (the caches of `nuwa prepare` stay valid), the fine-tuning lr and
    weight decay, and the variant's changes (its `adaptive` keys merged into the profile's)."""
    opts = dict(DERIVE_OPTIONS, **pick(FINETUNE_OPTIONS, ("finetune_lr", "weight_decay")))
    change = A_VARIANTS[variant]
    opts.update({k: v for k, v in change.items() if k != "adaptive"})
    if "adaptive" in change:
        opts["adaptive"] = dict(opts.get("adaptive", {}), **change["adaptive"])
    return opts


# The sweep reads only the cache keys (so `nuwa prepare`'s embedding scores are reused) and the
# Taylor scoring options: a change of, say, rho_head does not rerun it.
A_SWEEP_OPTIONS = pick(DERIVE, CACHE_KEYS + ("score_samples",))


A_RUN = "{base}/{subtask}/{variant}/a{alpha}-s{seed}"
A_MODEL = f"{MODELS}/ablations/{A_RUN}"


def ablation_runs():
    """Every ablation derivation once: Tables 5 and 6 on `subtasks`, Fig. 7's grid on `gamma.subtasks`."""
    runs_ = [(s, v, A_ALPHA) for s in A_SUBTASKS for v in TABLE5_VARIANTS + TABLE6_VARIANTS]
    runs_ += [(s, v, A_GAMMA_ALPHA) for s in A_GAMMA_SUBTASKS for v in FIG7_VARIANTS]
    return [A_RUN.format(base=A_BASE, subtask=s, variant=v, alpha=a, seed=A_SEED) for s, v, a in dict.fromkeys(runs_)]


A_TABLES = ("table1_svd_vs_score", "fig12_dimension_sweep", "table5_dimension_exclusion", "table6_techniques",
            "fig7_gamma_grid")


def ablation_targets():
    return ([f"{TABLES}/{t}.{ext}" for t in A_TABLES for ext in ("csv", "md", "parquet")]
            + [f"{RESULTS}/figures/fig7_gamma_grid_{A_BASE}.png",
               f"{RESULTS}/figures/fig12_dimension_sweep_{A_SWEEP_BASE}.png", f"{RESULTS}/ablations.json"])
