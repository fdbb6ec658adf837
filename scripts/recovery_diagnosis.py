"""Why does a larger edge ViT recover worse than a smaller one? One decisive experiment.

Takes derived models before recovery (e.g. NuWa and random at alpha 0.4 and 0.8 of one sub-task
and seed) and recovers each of them four ways, from the same starting weights, on the same
fit split:

  today      AdamW at the given lr, no warm-up, one cosine over `--samples`
  low-lr     a fifth of that lr, linear warm-up over the first tenth of the steps
  longer     today's lr on four times the samples (one cosine; validation read every `--samples`)
  head-only  the classifier alone, on the frozen pruned features (lr 10x, as linear probes use)

and, asked for by name (`--recipes`), the library's recoveries from the same weights:

  standard   `nuwa finetune`'s default (nuwa.recovery.recipe.standard), distilling from the base
  paper      the NuWa paper's: AdamW 1e-4, weight decay 0.05, 5 epochs of every fit image

It prints the weight scale of each kind of matrix (RMS per entry: qkv, proj, fc1, fc2, head)
and how far each recipe moved it (relative Frobenius change), because DINOv2's LayerScale is
folded into `proj` and `fc2`: those matrices are small, and Adam's step is the same size for
every entry whatever its scale. The two hypotheses it decides between:

  step size  the lr is too large for the larger model: low-lr beats today, longer does not help
  budget     the larger model is under-trained: longer beats today by more than low-lr does

Decisions read validation top-1 (the derivation's own split of the training set); test top-1 is
printed beside it. Writes OUT.csv and OUT.md.

    .venv/bin/python scripts/recovery_diagnosis.py --data fashion-mnist:data/fashion-mnist \
        --models models/dinov2/derived/dinov2s-fmnist/H1/{nuwa,random}/a0.{4,8}-s0/pruned \
        --out results/dinov2/recovery_diagnosis
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES = ("today", "low-lr", "longer", "head-only")
LIBRARY_RECIPES = ("standard", "paper")
RECIPE_OPTIONS = ("recovery_lrs", "recovery_distill_alphas", "layer_decay", "warmup_fraction", "recovery_round",
                  "recovery_max_samples", "recovery_patience", "recovery_search_samples", "distill_tau", "weight_decay")
TOLERANCE = 0.01  # of top-1: "within 1 point", as a recovery that reaches its base is judged
KINDS = ("qkv", "proj", "fc1", "fc2", "head")


def weight_rms(model) -> dict[str, float]:
    """RMS per entry of each kind of weight matrix, pooled over the layers."""
    import torch

    sums = {k: [0.0, 0] for k in KINDS}
    for name, p in model.named_parameters():
        kind = name.split(".")[-2] if name.endswith(".weight") else None
        if kind in sums and p.ndim == 2:
            sums[kind][0] += float(torch.sum(p.detach().double() ** 2))
            sums[kind][1] += p.numel()
    return {k: (s / n) ** 0.5 for k, (s, n) in sums.items() if n}


def relative_change(before: dict, model) -> dict[str, float]:
    """||W_after - W_before|| / ||W_before|| per kind, pooled over the layers."""
    import torch

    num = {k: 0.0 for k in KINDS}
    den = {k: 0.0 for k in KINDS}
    for name, p in model.named_parameters():
        kind = name.split(".")[-2] if name.endswith(".weight") else None
        if kind in num and p.ndim == 2:
            w0 = before[name].double()
            num[kind] += float(torch.sum((p.detach().double() - w0) ** 2))
            den[kind] += float(torch.sum(w0 ** 2))
    return {k: (num[k] / den[k]) ** 0.5 for k in KINDS if den[k] > 0}


def library_recovery(recipe: str, model, report: dict, task, test, opts, seed: int) -> dict:
    """One of the library's recoveries (nuwa.recovery.recover) on `model` in place: its row."""
    from nuwa import io
    from nuwa.evaluate import evaluate
    from nuwa.recovery import recover

    from dataclasses import fields, replace

    from nuwa.options import DeriveOptions

    # The library's recovery defaults, not those the derivation recorded (it may predate them).
    defaults = DeriveOptions()
    opts = replace(opts, **{f.name: getattr(defaults, f.name) for f in fields(DeriveOptions) if f.name in RECIPE_OPTIONS})
    base = io.load(report["base"]) if recipe == "standard" else None
    start = time.perf_counter()
    history, params, details = recover(model, base, task, recovery=recipe, epochs=0, opts=opts, seed=seed)
    seconds = time.perf_counter() - start
    v = evaluate(model, task.val, preprocess=task.preprocess, desc=None)
    t = evaluate(model, test, preprocess=task.preprocess, desc=None)
    samples = history["samples_seen"] + (details or {}).get("search_samples", 0)
    extra = {}
    if details:
        extra = dict(chosen=json.dumps(details["chosen"]), stopped=details["stopped"],
                     kept_at_samples=details["kept_at_samples"], teacher_forwards=details["teacher_forwards"])
    return dict(recipe=recipe, samples=samples, val_top1=v["top1"], val_loss=v["loss"], test_top1=t["top1"],
                seconds=round(seconds, 1), params=json.dumps(params), **extra)


def verdict(table) -> tuple[str, list[str]]:
    """Which hypothesis the four-recipe runs support. Per model, gain_low = val(low-lr) -
    val(today) at the same samples, gain_long = val(longer) - val(today) at four times the
    samples. "step size" where the smaller step at the same samples comes within `TOLERANCE`
    (1 point) of four times the samples (gain_low >= gain_long - 1 pt): the step, not the
    budget, held recovery back; "budget" where only more samples help."""
    lines, votes = [], []
    for (method, alpha), g in table.groupby(["method", "alpha"], sort=False):
        end = {r: g[g.recipe == r].sort_values("samples").iloc[-1] for r in ("today", "low-lr", "longer")
               if (g.recipe == r).any()}
        if len(end) < 3:
            continue
        low = end["low-lr"].val_top1 - end["today"].val_top1
        long = end["longer"].val_top1 - end["today"].val_top1
        votes.append("step size" if low >= long - TOLERANCE else "budget")
        lines.append(f"{method} at alpha {alpha:g}: low-lr {low * 100:+.1f} pts, longer {long * 100:+.1f} pts "
                     f"(validation, against today's recipe): {votes[-1]}")
    if not votes:
        return "not decided (the four recipes did not all run)", lines
    by_alpha = {}
    for line, vote in zip(lines, votes):
        by_alpha.setdefault(line.split(" at alpha ")[1].split(":")[0], []).append(vote)
    parts = []
    for alpha, vs in by_alpha.items():
        counts = {v: vs.count(v) for v in sorted(set(vs))}
        top = [v for v, k in counts.items() if k == max(counts.values())]
        if len(top) > 1:
            parts.append(f"alpha {alpha}: split ({', '.join(f'{k} {v}' for v, k in counts.items())})")
        else:
            parts.append(f"alpha {alpha}: {top[0]} ({counts[top[0]]} of {len(vs)} models)")
    return "; ".join(parts), lines


def render(table) -> str:
    """The markdown page of a diagnosis table."""
    show = table[["method", "alpha", "rate_achieved", "recipe", "samples", "val_top1", "test_top1", "seconds"]
                 + [c for c in table.columns if c.startswith("change_")]]
    rms_cols = ["method", "alpha"] + [c for c in table.columns if c.startswith("rms_")]
    text = ("# Recovery diagnosis\n\nWeight RMS per entry, before recovery:\n\n"
            + table[rms_cols].drop_duplicates().to_markdown(index=False, floatfmt=".3g")
            + "\n\nRecovery by recipe (val: the derivation's validation split; test: its test split; change: "
              "relative Frobenius change of each kind of matrix; seconds on 2 CPU cores):\n\n"
            + show.to_markdown(index=False, floatfmt=".4g") + "\n")
    if table.recipe.isin(["low-lr", "longer"]).any():
        decided, lines = verdict(table)
        text += ("\n## Verdict: " + decided + "\n\n" + verdict.__doc__.split("\n\n")[0].replace("\n    ", " ")
                 + "\n\n" + "".join(f"- {line}\n" for line in lines))
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", help="derived model directories (before recovery)")
    p.add_argument("--data")
    p.add_argument("--render", help="only rewrite OUT.md from this CSV (an earlier run's)")
    p.add_argument("--samples", type=int, default=6000, help="today's recovery budget (samples)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--out", required=True, help="output path without extension")
    a = p.parse_args(argv)
    if a.render:
        import pandas as pd

        from nuwa.atomic import atomic_path

        with atomic_path(Path(a.out).with_suffix(".md")) as tmp:
            Path(tmp).write_text(render(pd.read_csv(a.render)))
        return 0
    if not a.models or not a.data:
        print("recovery_diagnosis: --models and --data are needed (or --render CSV)", file=sys.stderr)
        return 2
    recipes = a.recipes.split(",")
    bad = [r for r in recipes if r not in RECIPES + LIBRARY_RECIPES]
    if bad:
        print(f"recovery_diagnosis: unknown recipe {bad[0]!r}; expected one of "
              f"{', '.join(RECIPES + LIBRARY_RECIPES)}", file=sys.stderr)
        return 2

    import pandas as pd
    import torch

    from nuwa import io
    from nuwa.atomic import atomic_path
    from nuwa.data import class_subset, open_split
    from nuwa.evaluate import evaluate
    from nuwa.options import DeriveOptions
    from nuwa.task import open_base_data, open_subtask
    from nuwa.train import fit, seed_everything

    rows = []
    for model_dir in a.models:
        report = io.read_report(model_dir) or {}
        seed = int(report.get("seed", 0))
        opts = DeriveOptions.from_dict(report["options"]) if report.get("options") else DeriveOptions()
        opts = opts.for_seed(seed if opts.split_seed is None else opts.split_seed)
        start_model = io.load(model_dir)
        classes = list(start_model.config.classes)
        task = open_subtask(open_base_data(a.data, start_model, opts=opts), start_model, classes, opts=opts)
        test = class_subset(open_split(a.data, "test", img_size=start_model.config.img_size), classes)
        start_state = {k: v.detach().clone() for k, v in start_model.state_dict().items()}
        rms = weight_rms(start_model)
        label = dict(model=str(model_dir), method=report.get("method"), alpha=report.get("rate_target"),
                     rate_achieved=round(float(report.get("rate_achieved", float("nan"))), 4), seed=seed,
                     **{f"rms_{k}": v for k, v in rms.items()})
        v0 = evaluate(start_model, task.val, preprocess=task.preprocess, desc=None)
        t0 = evaluate(start_model, test, preprocess=task.preprocess, desc=None)
        rows.append(dict(label, recipe="none", samples=0, val_top1=v0["top1"], val_loss=v0["loss"],
                         test_top1=t0["top1"], seconds=0.0))
        print(f"{model_dir}: start val {v0['top1']:.4f} test {t0['top1']:.4f}; weight RMS "
              + ", ".join(f"{k} {v:.2e}" for k, v in rms.items()), file=sys.stderr)
        for recipe in recipes:
            model = io.load(model_dir)
            model.load_state_dict(start_state)
            seed_everything(seed)
            if recipe in LIBRARY_RECIPES:
                rows.append(dict(label, **library_recovery(recipe, model, report, task, test, opts, seed)))
                r = rows[-1]
                print(f"  {recipe}: val {r['val_top1']:.4f} test {r['test_top1']:.4f} ({r['seconds']:.0f} s, "
                      f"{r['samples']} samples)", file=sys.stderr)
                continue
            lr, warmup, epochs = a.lr, 0.0, 1
            if recipe == "low-lr":
                lr, warmup = a.lr / 5, 0.1
            elif recipe == "longer":
                epochs = 4
            elif recipe == "head-only":
                lr = a.lr * 10
                for name, param in model.named_parameters():
                    param.requires_grad_(name.startswith("head."))
            start = time.perf_counter()
            checkpoints = []

            def log(line: str, model=model, checkpoints=checkpoints, start=start) -> None:
                # `fit` logs once per epoch; read validation there so `longer` gives a curve.
                v = evaluate(model, task.val, preprocess=task.preprocess, desc=None)
                checkpoints.append((v, time.perf_counter() - start))

            fit(model, task.fit, epochs=epochs, lr=lr, weight_decay=a.weight_decay, batch_size=a.batch_size,
                seed=seed, preprocess=task.preprocess, warmup_epochs=warmup * epochs, limit=a.samples,
                desc=f"{recipe}", log=log)
            change = relative_change(start_state, model)
            for k, (v, secs) in enumerate(checkpoints, 1):
                last = k == len(checkpoints)
                t = evaluate(model, test, preprocess=task.preprocess, desc=None) if last else None
                rows.append(dict(label, recipe=recipe, samples=k * a.samples, val_top1=v["top1"], val_loss=v["loss"],
                                 test_top1=None if t is None else t["top1"], seconds=round(secs, 1),
                                 **({f"change_{kk}": vv for kk, vv in change.items()} if last else {})))
            r = rows[-1]
            print(f"  {recipe}: val {r['val_top1']:.4f} test {r['test_top1']:.4f} ({r['seconds']:.0f} s); change "
                  + ", ".join(f"{kk} {vv:.3f}" for kk, vv in change.items()), file=sys.stderr)
    table = pd.DataFrame(rows)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(render(table))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
