"""NuWa's one-shot stage on a base (classifier slice, depth by the per-layer classifiers), for
the analysis rules: the same library calls as `nuwa.derivation.derive_nuwa`, stopped before the
adaptive stage, so the importance and spectra describe the model NuWa actually ranks."""
from __future__ import annotations

from pathlib import Path

from nuwa import io
from nuwa import layer_classifiers as lh
from nuwa.options import DeriveOptions
from nuwa.base import base_layer_heads
from nuwa.task import open_subtask
from nuwa.prune import prune_classifier, prune_depth, slice_head


def load_task(base_dir: str, spec: str, classes: list[int], options: dict):
    opts = DeriveOptions.from_dict(dict(options))
    base = io.load(base_dir)
    return base, open_subtask(spec, base, list(classes), opts=opts), opts


def choose_depth(base, base_dir: str, task, opts: DeriveOptions) -> tuple[int, list[float] | None]:
    """Layers kept by the depth rule (rho_depth on the sliced per-layer classifiers' val top-1)."""
    if not opts.prune_depth or base.config.depth == 1:
        return base.config.depth, None
    from nuwa.train import collect_cls_tokens

    heads = base_layer_heads(base, Path(base_dir), task, opts)  # the cache `nuwa prepare` built
    feats, labels = collect_cls_tokens(base, task.val, preprocess=task.preprocess, desc="depth features")
    accs = lh.accuracies(feats, labels, heads, task.classes, eps=base.config.norm_eps)
    return lh.choose_depth(accs, opts.rho_depth), accs


def one_shot_models(base, base_dir: str, classes: list[int], keep: int):
    """(classifier-sliced base, the same cut to `keep` layers exiting through that layer's classifier)."""
    sliced = prune_classifier(base, list(classes))
    if keep >= base.config.depth:
        return sliced, sliced
    heads = lh.load(Path(base_dir) / lh.FILE)
    if heads is None:
        raise FileNotFoundError(f"{base_dir}/{lh.FILE}: per-layer classifiers missing (run `nuwa prepare`)")
    return sliced, prune_depth(sliced, keep, slice_head(heads[keep - 1], list(classes)))
