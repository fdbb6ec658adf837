# The MobileViT compression study's table: its paths, derivation variants and measurement targets (rules in mobilevit_compression.smk).

S4 = P.get("mobilevit_compression")
S4_MODELS = f"{MODELS}/mobilevit_compression"
S4_RESULTS = f"{RESULTS}/mobilevit_compression"
SCENES = f"data/scenes/{PROFILE}.npz"
# The derivations from the distilled student, beside the MobileViT compression study's `norm`: each at norm's achieved rate.
S4_VARIANTS = {"nuwa": dict(method="nuwa"), "nuwa-svdoff": dict(method="nuwa", svd="off"),
               "nuwa-norm": dict(method="nuwa-norm"), "nuwa-subset": dict(method="nuwa", subset=True)}


def s4_rows():
    """(row, model, precision) of nuwa.paper.mobilevit_compression.ROWS: the measurement targets."""
    from nuwa.paper.mobilevit_compression import ROWS

    return [(key, model, precision) for key, model, precision, _ in ROWS]


def s4_measures():
    if S4 is None:
        raise WorkflowError(f"params.yaml: profile {PROFILE} has no mobilevit_compression section")
    return [f"{S4_RESULTS}/measure/{row}-s{seed}.json" for row, model, _ in s4_rows()
            for seed in (S4["seeds"][:1] if model == "teacher" else S4["seeds"])]


def s4_model(name, seed):
    return f"{S4_MODELS}/teacher" if name == "teacher" else f"{S4_MODELS}/{name}-s{seed}"
