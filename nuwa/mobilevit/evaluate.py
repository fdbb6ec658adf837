"""Segmenters on a scenes set's split: mean IoU of a model directory (`nuwa eval`), and the
per-image confusion matrices of a model or of an exported ONNX file (paired intervals)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import io
from ..errors import NuwaError


def scenes_for(model_cfg, data: str, split: str, classes: Any = None):
    """The split as the model sees it, and the foreground classes it is read for: a sub-task
    model's own; for the full model, `classes` (None: all)."""
    from ..data import resolve_classes
    from ..data.scenes import read_scenes
    from ..data.spec import parse_spec

    spec = parse_spec(data)
    if spec.kind != "scenes":
        raise NuwaError(f"data {data!r}: a segmenter is evaluated on a scenes set (scenes:PATH)")
    ds = read_scenes(spec.root, split)
    asked = None
    if classes is not None:
        asked = [c - 1 for c in resolve_classes(classes, ds.class_names) if c != 0]
    if model_cfg.classes is not None:  # a sub-task segmenter: background + its classes
        own = [c - 1 for c in model_cfg.classes if c != 0]
        if asked is not None and asked != own:
            raise NuwaError(f"the model was derived for classes {own}, not {asked}")
        return ds.subset(own), None, own
    return ds, asked, asked


def evaluate_dir(model_dir: str | Path, data: str, *, classes: Any = None, split: str = "test",
                 batch_size: int = 64, limit: int | None = None) -> dict[str, Any]:
    from ..device import device
    from ..segmentation import evaluate_segmenter
    from .derive import normaliser

    model = io.load(model_dir).to(device())
    ds, merge, fg = scenes_for(model.config, data, split, classes)
    if limit is not None:
        from ..data.scenes import SceneDataset

        ds = SceneDataset(ds.images[:limit], ds.masks[:limit], ds.class_names)
    r = evaluate_segmenter(model, ds, batch_size=batch_size, classes=merge, preprocess=normaliser(model.config))
    return dict(model=str(model_dir), data=data, split=split, classes=fg, **r)


@torch.no_grad()
def onnx_confusions(path: str | Path, ds, cfg, *, classes=None, batch_size: int = 32, threads: int | None = None):
    """(N, K, K) per-image confusions of an exported segmenter run by ONNX Runtime (any precision);
    with `classes`, the full model read for that sub-task (`nuwa.segmentation.evaluate_segmenter`'s rule)."""
    from ..bench import onnx_session
    from ..data.scenes import scene_batches, subset_logits, subset_masks
    from ..segmentation import confusion
    from .derive import normaliser

    sess = onnx_session(Path(path), threads)
    prep = normaliser(cfg)
    k = ds.num_classes if classes is None else 1 + len(classes)
    out = []
    for x, m in scene_batches(ds, batch_size=batch_size):
        logits = torch.from_numpy(sess.run(None, {"images": prep(x).numpy().astype(np.float32)})[0])
        if classes is not None:  # the full model read for a sub-task, as evaluate_segmenter does
            logits, m = subset_logits(logits, classes), subset_masks(m, classes)
        pred = logits.argmax(1)
        out += [confusion(p, t, k) for p, t in zip(pred, m)]
    return torch.stack(out)
