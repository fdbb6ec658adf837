"""Latency and throughput of a model: PyTorch eager or ONNX Runtime, median and p90 after warm-up."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .errors import NuwaError
from .model import EdgeViT

RUNTIMES = ("torch", "onnx")


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@torch.inference_mode()
def _torch_runner(model: EdgeViT, x: torch.Tensor):
    model = model.eval()
    return lambda: model(x)


def _onnx_runner(model: EdgeViT, x: torch.Tensor, threads: int | None):
    import onnxruntime as ort

    from .io import export_onnx

    with tempfile.TemporaryDirectory() as d:
        path = export_onnx(model, Path(d) / "model.onnx")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    return lambda: sess.run(None, feed)


def measure_latency(model: EdgeViT, *, batch_size: int = 1, runtime: str = "torch", threads: int | None = None,
                    warmup: int = 5, repeats: int = 30, min_seconds: float = 0.0) -> dict:
    """Wall-clock latency per batch in milliseconds: median and p90 over `repeats` runs after `warmup`."""
    if runtime not in RUNTIMES:
        raise NuwaError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if batch_size < 1:
        raise NuwaError(f"batch size {batch_size} must be >= 1")
    threads = threads or int(os.environ.get("NUWA_THREADS", 0)) or torch.get_num_threads()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = model.config
        x = torch.randn(batch_size, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(0))
        run = _torch_runner(model, x) if runtime == "torch" else _onnx_runner(model, x, threads)
        for _ in range(warmup):
            run()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(prev)
    med = statistics.median(times)
    return dict(runtime=runtime, batch_size=batch_size, threads=threads, repeats=len(times),
                latency_ms_median=med, latency_ms_p90=_percentile(times, 90),
                throughput=batch_size / (med / 1e3))
