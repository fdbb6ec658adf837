# Parameters and helpers of the extension rules (rules/extensions.smk): params.yaml's `extensions:`
# checked against the profile, and the runs and targets they make. Functions live here, rules there.
X = P.get("extensions") or {}
X_BASE = X.get("base") or next(iter(BASES))
if X and X_BASE not in BASES:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.extensions.base: {X_BASE!r} is not one of the profile's "
                        f"bases ({', '.join(BASES)})")
X_SUBTASK = X.get("subtask") or BASES[X_BASE]["subtasks"][0]
if X and X_SUBTASK not in BASES[X_BASE]["subtasks"]:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.extensions.subtask: {X_SUBTASK!r} is not a sub-task of base "
                        f"{X_BASE} ({', '.join(BASES[X_BASE]['subtasks'])})")
X_ALPHAS = [f"{a:g}" for a in X.get("alphas", [])]
if [a for a in X_ALPHAS if a not in ALPHAS]:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.extensions.alphas: {[a for a in X_ALPHAS if a not in ALPHAS]} "
                        f"not among the profile's alphas ({', '.join(ALPHAS)}): the extensions reuse their models")
X_SEED = P["seeds"][0]
X_RECOVERY = X.get("recovery") or {}
X_RECOVERIES = list(X_RECOVERY.get("methods", []))
# Recovery options of `nuwa finetune --recovery R`: the profile's split and fine-tuning options,
# and the extension's ridge / calibration / distillation settings.
X_RECOVERY_OPTIONS = dict(FINETUNE_OPTIONS, **{k: v for k, v in X_RECOVERY.items() if k != "methods"})
X_PROXY = X.get("proxy")
if X_PROXY and "source" not in DATASETS[BASES[X_BASE]["dataset"]]:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.extensions.proxy: the device/public split is written as npz "
                        f"files, which needs an in-memory data set (base {X_BASE}'s is "
                        f"{DATASETS[BASES[X_BASE]['dataset']]['spec']})")
X_EXPORT = X.get("export")
X_REGIMES = ("own", "proxy")
X_TABLES = ("recovery_methods", "data_regimes", "edge_export")

XMODELS = f"{MODELS}/extensions"
XRESULTS = f"{RESULTS}/extensions"
X_RUN = "{base}/{subtask}/{recovery}/a{alpha}-s{seed}"
X_PROXY_DIR = "{base}/{subtask}/s{seed}"


def x_main_run(w, stage):
    """A model of the main derivations (NuWa) that an extension starts from."""
    return model_files(f"{MODELS}/derived/{w.base}/{w.subtask}/nuwa/a{w.alpha}-s{w.seed}/{stage}")


def regime_inputs(w):
    """`own` reads the device's images; `proxy` only the public pool and the device's gmm.json."""
    d = X_PROXY_DIR.format(**w)
    if w.regime == "own":
        return dict(train=f"{XMODELS}/proxy/{d}/device.npz")
    return dict(train=f"{XMODELS}/proxy/{d}/public.npz", gmm=f"{XRESULTS}/proxy/{d}/gmm.json")


def x_key(**kw):
    return dict(base=X_BASE, subtask=X_SUBTASK, seed=X_SEED, **kw)


def x_tables_inputs():
    """What the extension tables read: per-run rows, and the main run's metrics (finetune, none)."""
    main = [f"{RESULTS}/metrics/{X_BASE}/{X_SUBTASK}/nuwa/a{a}-s{X_SEED}.json" for a in X_ALPHAS]
    recovery = [f"{XRESULTS}/recovery/{X_RUN}.json".format(**x_key(recovery=r, alpha=a))
                for r in X_RECOVERIES for a in X_ALPHAS]
    regimes = ([f"{XRESULTS}/proxy/{X_PROXY_DIR}/{{regime}}-a{{alpha}}.json".format(
        **x_key(regime=g, alpha=f"{X_PROXY['alpha']:g}")) for g in X_REGIMES]
        + [f"{XRESULTS}/proxy/{X_PROXY_DIR}/split.json".format(**x_key()),
           f"{XRESULTS}/proxy/{X_PROXY_DIR}/gmm.json".format(**x_key())]) if X_PROXY else []
    export = ([f"{XRESULTS}/export/{X_BASE}/base.json"]
              + [f"{XRESULTS}/export/{X_BASE}/{X_SUBTASK}/a{a}-s{X_SEED}.json" for a in X_ALPHAS]) if X_EXPORT else []
    # The main run's model of the same rate, trained on every training image of the sub-task.
    pa = f"{X_PROXY['alpha']:g}" if X_PROXY else None
    reference = [f"{RESULTS}/metrics/{X_BASE}/{X_SUBTASK}/nuwa/a{pa}-s{X_SEED}.json"] if pa in ALPHAS else []
    return dict(main=main if X_RECOVERIES else [], recovery=recovery, regimes=regimes, reference=reference,
                export=export)


def extension_targets():
    if not X:
        return []
    return [f"{TABLES}/{t}.{ext}" for t in X_TABLES for ext in ("csv", "md", "parquet")]
