# Settings, paths and helpers of the interpretation rules (interpret.smk), validated at start-up.
I = P["interpret"]
I_BASE = I.get("base") or next(iter(BASES))
if I_BASE not in BASES:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.interpret.base: {I_BASE!r} is not one of the profile's "
                        f"bases ({', '.join(BASES)})")
I_DATASET = BASES[I_BASE]["dataset"]
I_SPEC = DATASETS[I_DATASET]["spec"]
FIG8 = I["fig8"]
FIG8_ALPHA = f"{FIG8['alpha'] if 'alpha' in FIG8 else max(P['alphas']):g}"  # default: the largest
FIG8_MODELS = FIG8.get("models") or BASES[I_BASE]["subtasks"][:2]
FIG8_IMAGES = FIG8.get("images") or [m for m in FIG8_MODELS if m != "base"]
_bad = [m for m in FIG8_MODELS if m != "base" and m not in BASES[I_BASE]["subtasks"]]
if _bad:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.interpret.fig8.models: {_bad} are not sub-tasks of base "
                        f"{I_BASE} ({', '.join(BASES[I_BASE]['subtasks'])}) nor `base`")
if FIG8_ALPHA not in ALPHAS or "nuwa" not in P["methods"]:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.interpret.fig8.alpha: {FIG8_ALPHA} must be one of the "
                        f"profile's alphas ({', '.join(ALPHAS)}) with method nuwa")
_bad = [s for s in FIG8_IMAGES if s not in SUBTASKS[I_DATASET]]
if len(FIG8_IMAGES) != 2 or _bad:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.interpret.fig8.images: two sub-tasks of "
                        f"{DATASETS[I_DATASET]['subtasks']} are needed (one image each, and their composite)")
FIG2 = I["fig2"]
FIG2_LARGE = FIG2.get("large") or I_BASE
if FIG2_LARGE not in BASES or BASES[FIG2_LARGE]["dataset"] != I_DATASET:
    raise WorkflowError(f"params.yaml: profiles.{PROFILE}.interpret.fig2.large: {FIG2_LARGE!r} must be a base of the "
                        f"profile on the data set of interpret.base ({I_DATASET})")
SMALL_DIR = f"{MODELS}/interpret/small-base"


def fig8_model_dir(entry):
    if entry == "base":
        return BASE_DIR.format(base=I_BASE)
    run = RUN.format(base=I_BASE, subtask=entry, method="nuwa", alpha=FIG8_ALPHA, seed=P["seeds"][0])
    return f"{MODELS}/derived/{run}/finetuned"


def small_base_args(wildcards):
    """`nuwa pretrain` for Fig. 2's small base: the same recipe as a base of params.yaml."""
    s = FIG2["small"]
    args = ["pretrain", "--model", s["model"], "--data", I_SPEC, "--out", SMALL_DIR]
    if s.get("checkpoint"):
        args += ["--checkpoint", s["checkpoint"]]
    if s.get("pretrained"):
        args += ["--pretrained"]
    for key, value in s.get("pretrain", {}).items():
        args += ([] if value else ["--no-augment"]) if key == "augment" else [f"--{key.replace('_', '-')}", str(value)]
    return args


INTERPRET_FIGURES = dict(
    fig8=f"{RESULTS}/figures/fig8_attention_rollout_{I_BASE}.png",
    fig11=f"{RESULTS}/figures/fig11_tsne_layers_{I_BASE}.png",
    fig9_10=f"{RESULTS}/figures/fig9_10_neuron_top_samples_{I_BASE}.png",
    fig2=f"{RESULTS}/figures/fig2_task_specific_finetuning.png",
)


def table_files(name):
    return [f"{TABLES}/{name}.{ext}" for ext in ("csv", "md", "parquet")]


def table_outputs(name, prefix="", caption=None):
    """A table's csv/md/parquet as named outputs (`{prefix}csv`, ...); the csv goes into the report."""
    files = dict(zip(("csv", "md", "parquet"), table_files(name)))
    if caption:
        files["csv"] = report(files["csv"], caption=caption, category="Tables")
    return {prefix + kind: path for kind, path in files.items()}


def interpret_targets():
    parts = set(I["parts"])
    tables = dict(fig8=["fig8_attention_rollout"], neurons=["table2_neuron_top_samples", "table2_neuron_class_spread"],
                  fig2=["fig2_task_specific_finetuning"])
    figures = [f for k, f in INTERPRET_FIGURES.items() if k.replace("fig9_10", "neurons") in parts]
    return figures + [f for k, names in tables.items() if k in parts for t in names for f in table_files(t)]
