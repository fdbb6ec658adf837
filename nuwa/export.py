"""Edge export: ONNX at fp32, fp16 or int8 (what each precision costs in accuracy, bytes and time:
`nuwa.onnx_eval`).

    from nuwa.export import export
    from nuwa.onnx_eval import compare_precisions, evaluate_onnx
    export("models/edge", "edge-int8.onnx", precision="int8")            # dynamic int8, no calibration
    export("models/edge", "edge-q.onnx", precision="int8", int8_mode="static", calib="fashion-mnist")
    rows = compare_precisions("models/edge", "fashion-mnist", threads=1)

Every file keeps the fp32 interface (input `images` float32 (B,C,H,W), output `logits` float32,
dynamic batch), so callers feed the same tensors whatever the precision. The model's config
rides along in the file's metadata (`nuwa.config`), so `evaluate_onnx` and `nuwa eval --onnx`
know the preprocessing and the classes without the model directory.

int8 modes (ONNX Runtime quantisation, after `quant_pre_process`; weights in a 7-bit range in both,
so that x86 CPUs without VNNI do not saturate: `REDUCE_RANGE`):
  dynamic  weights int8 per tensor, activations quantised at run time (MatMulInteger); no data.
  static   QDQ, weights int8 per channel, activations uint8 with symmetric MinMax ranges
           calibrated on the model's own sub-task training split, preprocessed as the model expects.
The default is dynamic, by measurement on the default model (12 layers, dim 96, Fashion-MNIST
test set of 10000; 2-core x86 CPU with VNNI, ORT 1.31, 1 thread): faster (~0.75x fp32's time at
batch 1 and 64; static ~0.95x at batch 64 and ~1.15x at batch 1: its Q/DQ pairs around every
MatMul cost more than int8 saves at this width), at least as accurate (argmax
agreement with fp32 99.84 % vs 99.48 %, top-1 83.28 % vs 83.27 %, fp32 83.27 %; on a derived
4-class model 98.9 % vs 98.4 %), and it needs no calibration data. Dynamic int8 takes activation
ranges per batch, so a sample's logits depend slightly on its batch mates; static's do not.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import nn

from . import io
from .arch import EdgeViTConfig
from .atomic import atomic_path
from .data.spec import DataSpec
from .errors import NuwaError
from .model import EdgeViT

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("dynamic", "static")
DEFAULT_INT8_MODE = "dynamic"  # measured: see the module docstring
DEFAULT_CALIB_SAMPLES = 256
META_CONFIG, META_PRECISION = "nuwa.config", "nuwa.precision"
# Weight-bearing ops only: quantising Add/Softmax/LayerNorm too (QDQ around every op) made static
# int8 slower than fp32 on CPU and cost agreement (98.4 % vs 99.5 % argmax agreement, default model).
_STATIC_OPS = ["MatMul", "Gemm", "Conv"]
# 7-bit weights. On x86 without VNNI (AVX2 only) ONNX Runtime multiplies uint8 activations by
# int8 weights with vpmaddubsw, whose int16 pair sums saturate for 8-bit weights: logits drift
# (relative difference 0.44 against fp32 where VNNI gives < 0.25) and argmax agreement drops.
# 7-bit weights cannot saturate, so one file is accurate on every CPU; the export records it.
REDUCE_RANGE = True
INT8_KERNELS = "7-bit weights (reduce_range): no int16 saturation on x86 with or without VNNI"
META_INT8 = "nuwa.int8_weights"


def parse_precision(precision: str, int8_mode: str | None = None) -> tuple[str, str | None]:
    """("int8-static" | "int8", mode) -> ("int8", "static"); check both names."""
    p = str(precision).strip().lower()
    if p.startswith("int8-"):
        p, suffix = "int8", p[5:]
        if int8_mode is not None and int8_mode != suffix:
            raise NuwaError(f"precision {precision!r} contradicts int8_mode={int8_mode!r}")
        int8_mode = suffix
    if p not in PRECISIONS:
        raise NuwaError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)} "
                        "(or int8-dynamic, int8-static)")
    if p != "int8":
        if int8_mode is not None:
            raise NuwaError(f"int8_mode={int8_mode!r} given for precision {p!r}; it only applies to int8")
        return p, None
    mode = DEFAULT_INT8_MODE if int8_mode is None else str(int8_mode)
    if mode not in INT8_MODES:
        raise NuwaError(f"unknown int8 mode {mode!r}; expected one of {', '.join(INT8_MODES)}")
    return p, mode


def check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NuwaError(f"{name}={value!r} must be a positive integer")
    return value


# ---- data ---------------------------------------------------------------------------------------
def is_spec(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike, DataSpec))


def subtask_split(config: EdgeViTConfig, data: Any, split: str = "test"):
    """The split a model is evaluated on, labelled as `nuwa eval` labels it: for a derived model
    only its classes' samples, relabelled 0..k-1 in the order of `config.classes`. A data set
    (not a spec) is used as given."""
    from .data import open_split

    if not is_spec(data):
        return data
    ds = open_split(data if isinstance(data, DataSpec) else str(data), split, img_size=config.img_size)
    return restrict_to_model_classes(config, ds, data, split)


def restrict_to_model_classes(config: EdgeViTConfig, ds: Any, data: Any, split: str):
    from .data import class_subset

    if config.classes is not None:
        n = len(ds.class_names)
        if max(config.classes) >= n:
            raise NuwaError(f"class index {max(config.classes)} of the model is not in data {str(data)!r} ({n} classes)")
        ds = class_subset(ds, config.classes)
    if len(ds) == 0:
        raise NuwaError(f"no {split} samples for the model's classes in {str(data)!r}")
    return ds


def calibration_batches(config: EdgeViTConfig, calib: Any, *, samples: int = DEFAULT_CALIB_SAMPLES,
                        batch_size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Up to `samples` preprocessed training images of the model's sub-task (a seeded shuffle, so
    every class shows up), as float32 arrays of at most `batch_size`."""
    from .data import Preprocess, batches

    check_positive("calib_samples", samples)
    ds = subtask_split(config, calib, "train")
    pre = Preprocess.for_config(config)
    out = [pre(x).numpy() for x, _ in batches(ds, batch_size=batch_size, shuffle=True, seed=seed, limit=samples,
                                               progress="calibration data")]
    if not out:
        raise NuwaError(f"calibration data {str(calib)!r} holds no samples for the model's classes")
    return out


# ---- conversion ---------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ORT's quantiser logs a warning per tensor on the root logger and the exporter prints
    progress: keep stdout for the CLI's JSON and stderr to what matters."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logging.disable(previous)


def _strip_debug(model: Any) -> None:
    # The torch exporter tags every node with its FX node, stack trace and source paths: ~8 % of
    # the default model's file, and local paths have no place in a shipped artefact.
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    model.graph.doc_string = ""


def _set_meta(model: Any, meta: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


class _Reader:
    """ORT CalibrationDataReader over precomputed batches."""

    def __init__(self, name: str, data: list[np.ndarray]) -> None:
        self.name, self.data, self.i = name, data, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.data):
            return None
        self.i += 1
        return {self.name: self.data[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def _quantize(src: Path, dst: Path, *, mode: str, calib: list[np.ndarray] | None, work: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    # Shape inference + constant folding first, as ORT recommends: the quantiser needs shapes to
    # pick which MatMuls have a constant weight.
    quant_pre_process(str(src), str(pre))
    if mode == "dynamic":
        quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                         reduce_range=REDUCE_RANGE)
    else:
        quantize_static(str(pre), str(dst), _Reader("images", calib or []), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=REDUCE_RANGE, op_types_to_quantize=_STATIC_OPS,
                        # Symmetric activation ranges: with asymmetric MinMax ranges the small
                        # test-profile models (dim 48) collapsed to one class (argmax agreement with
                        # fp32 0.33 and 0.09); symmetric ones agree on 98 %.
                        extra_options={"ActivationSymmetric": True})


def _check_runs(path: Path, config: EdgeViTConfig) -> None:
    """Refuse to publish a file ONNX Runtime cannot load or that gives non-finite logits."""
    from .bench import onnx_session

    try:
        sess = onnx_session(path, 1)
        out = sess.run(None, {"images": np.zeros((1, config.in_chans, *config.img_size), np.float32)})[0]
    except Exception as e:  # noqa: BLE001 - any ORT failure means the conversion produced a bad file
        raise NuwaError(f"{path.name}: ONNX Runtime cannot run the converted model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None
    shape = (1, config.num_classes) if getattr(config, "task", "classify") == "classify" else \
        (1, config.num_classes, *config.img_size)
    if out.shape != shape or out.dtype != np.float32 or not np.isfinite(out).all():
        raise NuwaError(f"{path.name}: converted model gives {out.dtype} logits of shape {out.shape}, not finite "
                        f"float32 {shape}")


def convert(src: str | Path, path: str | Path, *, config: EdgeViTConfig, precision: str = "fp32",
            int8_mode: str | None = None, calib_data: list[np.ndarray] | None = None) -> Path:
    """Write an fp32 export `src` (from `nuwa.export_onnx`) at `precision` to `path`, atomically.

    fp16: weights and compute in float16, float32 input/output (Casts at the edges). int8: ONNX
    Runtime quantisation (`int8_mode`); static needs `calib_data` (see `calibration_batches`).
    """
    import onnx

    precision, mode = parse_precision(precision, int8_mode)
    if mode == "static" and not calib_data:
        raise NuwaError("static int8 needs calibration data (calib=DATA, --calib-data)")
    src, path = Path(src), Path(path)
    with tempfile.TemporaryDirectory(prefix="nuwa-export-") as d, quiet():
        work = Path(d)
        model = onnx.load(str(src))
        _strip_debug(model)
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(model, keep_io_types=True)
        elif precision == "int8":
            clean = work / "fp32.onnx"
            onnx.save(model, str(clean))
            _quantize(clean, work / "int8.onnx", mode=mode, calib=calib_data, work=work)  # type: ignore[arg-type]
            model = onnx.load(str(work / "int8.onnx"))
            _strip_debug(model)
        meta = {META_CONFIG: json.dumps(config.to_dict(), sort_keys=True),
                META_PRECISION: precision if mode is None else f"int8-{mode}"}
        if precision == "int8":
            meta[META_INT8] = INT8_KERNELS
        _set_meta(model, meta)
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
            _check_runs(tmp, config)
    return path


def export(model_or_dir: EdgeViT | str | Path, path: str | Path, *, precision: str = "fp32",
           int8_mode: str | None = None, calib: Any = None, calib_samples: int = DEFAULT_CALIB_SAMPLES,
           seed: int = 0, opset: int = 18) -> Path:
    """Export a model (or model directory) to ONNX at `precision` ("fp32", "fp16", "int8").

    `calib`: for static int8, a data spec (its training split, restricted to the model's
    classes) or a data set; `calib_samples` images are drawn from it with `seed`. Every
    argument is checked before any work; the output appears only when complete.
    """
    precision, mode = parse_precision(precision, int8_mode)
    check_positive("calib_samples", calib_samples)
    if mode == "static" and calib is None:
        raise NuwaError("static int8 needs calibration data: pass calib=DATA (CLI: --calib-data DATA)")
    if calib is not None and mode != "static":
        raise NuwaError(f"calibration data {str(calib)!r} is only used by static int8, not {precision}"
                        f"{'' if mode is None else '-' + mode}")
    model = model_or_dir if isinstance(model_or_dir, nn.Module) else io.load(model_or_dir)
    # Read the calibration data before exporting: a bad spec fails in a second, not after the export.
    data = calibration_batches(model.config, calib, samples=calib_samples, seed=seed) if mode == "static" else None
    with tempfile.TemporaryDirectory(prefix="nuwa-export-") as d:
        with quiet():
            fp32 = io.export_onnx(model.eval(), Path(d) / "fp32.onnx", opset=opset)
        return convert(fp32, path, config=model.config, precision=precision, int8_mode=mode, calib_data=data)


# ---- metadata -------------------------------------------------------------------------------------
def read_meta(path: str | Path) -> tuple[EdgeViTConfig | None, str | None]:
    """(config, precision) recorded in an exported file; (None, None) for a foreign ONNX file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise NuwaError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf decode errors have no common base
        raise NuwaError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    cfg = None
    if META_CONFIG in meta:
        d = json.loads(meta[META_CONFIG])
        if d.get("family") == "mobilevit":
            from .mobilevit.arch import MobileViTConfig

            cfg = MobileViTConfig.from_dict(d)
        else:
            cfg = EdgeViTConfig.from_dict(d)
    return cfg, meta.get(META_PRECISION)
