"""Exported ONNX files at work: top-1 of a file (`evaluate_onnx`, `nuwa eval --onnx`: `evaluate_file`)
and what each precision costs against fp32 in accuracy, bytes and time (`compare_precisions`)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import io
from .arch import EdgeViTConfig
from .errors import NuwaError
from .export import (
    DEFAULT_CALIB_SAMPLES, PRECISIONS, calibration_batches, check_positive, convert, is_spec, parse_precision, quiet,
    read_meta, restrict_to_model_classes, subtask_split,
)


def _session(path: Path, threads: int | None):
    from .bench import onnx_session

    try:
        return onnx_session(path, threads)
    except Exception as e:  # noqa: BLE001
        raise NuwaError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def onnx_logits(path: str | Path, dataset: Any, *, preprocess: Any, batch_size: int = 256,
                limit: int | None = None, threads: int | None = None,
                desc: str | None = "onnx eval") -> tuple[np.ndarray, np.ndarray]:
    """All logits (N, classes) of an ONNX file on `dataset` (uint8 batches through `preprocess`)
    and the labels (N,)."""
    from .data import batches

    check_positive("batch_size", batch_size)
    sess = _session(Path(path), threads)
    name = sess.get_inputs()[0].name
    logits, labels = [], []
    for x, y in batches(dataset, batch_size=batch_size, limit=limit, progress=desc):
        logits.append(sess.run(None, {name: preprocess(x).numpy()})[0].astype(np.float32))
        labels.append(y.numpy())
    if not logits:
        raise NuwaError(f"no samples to evaluate (data set has {len(dataset)}, limit={limit})")
    return np.concatenate(logits), np.concatenate(labels)


def evaluate_onnx(path: str | Path, dataset: Any, *, preprocess: Any = None, batch_size: int = 256,
                  limit: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """Top-1 of an ONNX file: {"top1", "n"}.

    `dataset`: a data set whose labels index the file's outputs, or a data spec, whose test split
    is then labelled as `nuwa eval` labels it (a derived model's classes, relabelled 0..k-1).
    `preprocess` defaults to the one recorded in the file (`nuwa.config` metadata).
    """
    from .data import Preprocess

    cfg, _ = read_meta(path)
    if preprocess is None or is_spec(dataset):
        if cfg is None:
            raise NuwaError(f"{path}: no nuwa config in the file's metadata; pass preprocess= and a data set")
        preprocess = preprocess or Preprocess.for_config(cfg)
        dataset = subtask_split(cfg, dataset, "test")
    logits, labels = onnx_logits(path, dataset, preprocess=preprocess, batch_size=batch_size, limit=limit,
                                 threads=threads)
    if labels.size and int(labels.max()) >= logits.shape[1]:
        raise NuwaError(f"label {int(labels.max())} is not an output of {path} ({logits.shape[1]} classes)")
    return {"top1": float((logits.argmax(-1) == labels).mean()), "n": int(labels.size)}


def compare_precisions(model_dir: str | Path, data_spec: Any, *, precisions: Sequence[str] = PRECISIONS,
                       batch_sizes: Sequence[int] = (1, 64), limit: int | None = None, threads: int | None = None,
                       int8_mode: str | None = None, calib: Any = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
                       warmup: int = 5, repeats: int = 30, out_dir: str | Path | None = None) -> list[dict]:
    """One row per precision: top-1 on the sub-task's test split, file bytes, ONNX Runtime latency
    (median ms per batch size, `nuwa.bench.measure_latency` on the file) and agreement with fp32
    (max abs logit difference, its ratio to fp32's largest |logit|, share of equal argmax).

    `precisions` may name int8 modes ("int8-static"); static calibrates on `calib` (default: the
    training split of `data_spec`). `out_dir` keeps the files (`{precision}.onnx`).
    """
    from .progress import bar

    from .bench import measure_latency
    from .data import Preprocess

    parsed = [parse_precision(p, int8_mode if str(p).lower() == "int8" else None) for p in precisions]
    if not parsed:
        raise NuwaError("precisions is empty; expected any of fp32, fp16, int8")
    for b in batch_sizes:
        check_positive("batch size", b)
    check_positive("calib_samples", calib_samples)
    model = io.load(model_dir)
    cfg = model.config
    test = subtask_split(cfg, data_spec, "test")
    pre = Preprocess.for_config(cfg)
    data = None
    if any(m == "static" for _, m in parsed):
        data = calibration_batches(cfg, data_spec if calib is None else calib, samples=calib_samples)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nuwa-compare-") as d:
        where = Path(out_dir) if out_dir is not None else Path(d)
        with quiet():
            src = io.export_onnx(model, Path(d) / "src.onnx")
        ref = None
        for p, mode in [("fp32", None), *[pm for pm in parsed if pm != ("fp32", None)]]:
            name = p if mode is None else f"{p}-{mode}"
            f = convert(src, where / f"{name}.onnx", config=cfg, precision=p, int8_mode=mode, calib_data=data)
            logits, labels = onnx_logits(f, test, preprocess=pre, limit=limit, threads=threads, desc=f"eval {name}")
            if ref is None:
                ref, ref_bytes = logits, f.stat().st_size
            if (p, mode) not in parsed:
                continue  # fp32 only as the reference
            row: dict[str, Any] = dict(
                precision=name, bytes=f.stat().st_size, top1=float((logits.argmax(-1) == labels).mean()),
                bytes_vs_fp32=f.stat().st_size / ref_bytes, n=int(labels.size), max_abs_logit_diff=float(np.abs(logits - ref).max()),
                rel_logit_diff=float(np.abs(logits - ref).max() / max(float(np.abs(ref).max()), 1e-12)),
                argmax_agreement=float((logits.argmax(-1) == ref.argmax(-1)).mean()))
            for b in bar(list(batch_sizes), desc=f"latency {name}", leave=False):
                lat = measure_latency(model, batch_size=b, runtime="onnx", threads=threads, warmup=warmup,
                                      repeats=repeats, onnx_path=f)
                row[f"latency_ms_b{b}"] = lat["latency_ms_median"]
                row["threads"] = lat["threads"]
            rows.append(row)
    return rows


def evaluate_file(path: str | Path, data: Any, *, model_dir: str | Path | None = None, classes: Any = None,
                  subtask: str | None = None, split: str = "test", batch_size: int = 256,
                  limit: int | None = None, threads: int | None = None) -> dict[str, Any]:
    """`nuwa eval --onnx`: top-1 of an exported file on `split` of `data`, with the preprocessing and
    classes of `model_dir` or, without it, those recorded in the file."""
    from .data import Preprocess, open_split, resolve_classes

    cfg, precision = read_meta(path)
    if model_dir is not None:
        cfg = EdgeViTConfig.read(Path(model_dir) / io.CONFIG_FILE) if Path(model_dir).is_dir() else None
        if cfg is None:
            raise NuwaError(f"{model_dir}: no such model directory")
    if cfg is None:
        raise NuwaError(f"{path}: no nuwa config in the file's metadata (not exported by nuwa); pass --model DIR")
    full = open_split(data, split, img_size=cfg.img_size)
    if subtask is not None:
        from .subtasks import lookup

        classes = lookup(subtask, data)
    if classes is not None:
        # The file's outputs are fixed: a class list can only confirm them, never slice them.
        asked = resolve_classes(classes, list(full.class_names))
        have = list(range(cfg.num_classes)) if cfg.classes is None else list(cfg.classes)
        if asked != have:
            raise NuwaError(f"{path} predicts classes {have}, not {asked}; --classes/--subtask cannot slice an ONNX file")
    ds = restrict_to_model_classes(cfg, full, data, split)
    result = evaluate_onnx(path, ds, preprocess=Preprocess.for_config(cfg), batch_size=batch_size, limit=limit,
                           threads=threads)
    return dict(result, split=split, data=str(data), onnx=str(path), precision=precision,
                classes=cfg.classes, class_names=cfg.class_names)
