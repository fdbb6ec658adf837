# Seed 004's table: its paths, derivation variants and measurement targets (rules in seed004.smk).

S4 = P.get("seed004")
S4_MODELS = f"{MODELS}/seed004"
S4_RESULTS = f"{RESULTS}/seed004"
SCENES = f"data/scenes/{PROFILE}.npz"
# The derivations from the distilled student, beside seed 004's `norm`: each at norm's achieved rate.
S4_VARIANTS = {"nuwa": dict(method="nuwa"), "nuwa-svdoff": dict(method="nuwa", svd="off"),
               "nuwa-norm": dict(method="nuwa-norm"), "nuwa-subset": dict(method="nuwa", subset=True)}


def s4_rows():
    """(row, model, precision) of nuwa.paper.seed004.ROWS: the measurement targets."""
    from nuwa.paper.seed004 import ROWS

    return [(key, model, precision) for key, model, precision, _ in ROWS]


def s4_measures():
    if S4 is None:
        raise WorkflowError(f"params.yaml: profile {PROFILE} has no seed004 section")
    return [f"{S4_RESULTS}/measure/{row}-s{seed}.json" for row, model, _ in s4_rows()
            for seed in (S4["seeds"][:1] if model == "teacher" else S4["seeds"])]


def s4_model(name, seed):
    return f"{S4_MODELS}/teacher" if name == "teacher" else f"{S4_MODELS}/{name}-s{seed}"
