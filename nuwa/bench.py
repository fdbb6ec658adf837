"""Latency and throughput of a model: PyTorch eager, ONNX Runtime or torch.compile; median and p90
after warm-up; CUDA events on a GPU; weight bytes and the peak memory the runs add."""
from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from .errors import NuwaError
from .model import EdgeViT

RUNTIMES = ("torch", "onnx", "compile")


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@torch.inference_mode()
def _torch_runner(model: EdgeViT, x: torch.Tensor):
    model = model.eval()
    return lambda: model(x)


def _compile_runner(model: EdgeViT, x: torch.Tensor):
    # Inductor needs a C++ compiler on CPU; a failure here is reported, never silently eager.
    try:
        compiled = torch.compile(model.eval(), dynamic=False)
        with torch.inference_mode():
            compiled(x)
    except Exception as e:  # noqa: BLE001 - any backend failure means "compile does not work here"
        raise NuwaError(f"torch.compile does not work here ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

    @torch.inference_mode()
    def run():
        return compiled(x)
    return run


class _PeakRSS:
    """Peak resident memory above the level at start, sampled every few milliseconds (Linux /proc);
    None where /proc is missing. On CUDA the caller reads torch's allocator instead."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.start = self._rss()

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> "_PeakRSS":
        if self.start is not None:
            self.peak = self.start
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss() or 0)

    def __exit__(self, *exc) -> None:
        if self.start is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss() or 0)

    @property
    def added_mb(self) -> float | None:
        return None if self.start is None else (self.peak - self.start) / 2**20


def onnx_session(path: Path, threads: int | None, profile_prefix: str | None = None):
    """An ONNX Runtime CPU session with all graph optimisations; `threads` pins the intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _onnx_runner(model: EdgeViT, x: torch.Tensor, threads: int | None, onnx_path: Path | None = None):
    from .io import export_onnx

    with tempfile.TemporaryDirectory() as d:
        # The export has a dynamic batch axis, so one file serves every batch size of a suite.
        sess = onnx_session(onnx_path or export_onnx(model, Path(d) / "model.onnx"), threads)
    feed = {"images": x.numpy()}
    return lambda: sess.run(None, feed)


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Milliseconds for one call: CUDA events on a GPU (kernels are asynchronous), else wall clock."""
    if device.type == "cuda":
        def cuda_ms(run):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        return cuda_ms

    def wall_ms(run):
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1e3
    return wall_ms


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def measure_latency(model: EdgeViT, *, batch_size: int = 1, runtime: str = "torch", threads: int | None = None,
                    warmup: int = 5, repeats: int = 30, min_seconds: float = 0.0,
                    device: str | torch.device = "cpu", onnx_path: str | Path | None = None) -> dict:
    """Latency per batch in milliseconds: median and p90 over `repeats` runs after `warmup`, with
    throughput (images/s), the threads used, weight bytes and the peak memory the runs added."""
    if runtime not in RUNTIMES:
        raise NuwaError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if batch_size < 1:
        raise NuwaError(f"batch size {batch_size} must be >= 1")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise NuwaError(f"unknown device {device!r}; expected cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise NuwaError(f"unknown device {str(device)!r}; expected cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NuwaError("device 'cuda' asked for but no GPU is visible")
    if device.type == "cuda" and runtime == "onnx":
        raise NuwaError("the onnx runtime is measured on the CPU only here; use torch or compile on cuda")
    threads = threads or int(os.environ.get("NUWA_THREADS", 0)) or torch.get_num_threads()
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cfg = model.config
        x = torch.randn(batch_size, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(0))
        model, x = model.to(device), x.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with _PeakRSS() as mem:
            run = {"torch": lambda: _torch_runner(model, x), "onnx": lambda: _onnx_runner(model, x, threads, onnx_path and Path(onnx_path)),
                   "compile": lambda: _compile_runner(model, x)}[runtime]()
            timer = _timer(device)
            for _ in range(warmup):
                run()
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < repeats or time.perf_counter() - start < min_seconds:
                times.append(timer(run))
    finally:
        torch.set_num_threads(prev)
    med = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else mem.added_mb)
    return dict(runtime=runtime, device=str(device), batch_size=batch_size, threads=threads, repeats=len(times),
                latency_ms_median=med, latency_ms_p90=_percentile(times, 90), throughput=batch_size / (med / 1e3),
                weight_bytes=weight_bytes(model), peak_mem_mb=None if peak is None else round(peak, 1))


def bench_suite(model: EdgeViT, *, batch_sizes: Iterable[int] = (1, 64), runtimes: Iterable[str] = ("torch", "onnx"),
                on_error: str = "raise", **kw) -> list[dict]:
    """Every (runtime, batch size) pair; with on_error="record" a runtime that does not work here
    (torch.compile without a compiler) gives a row with its `error` instead of stopping the suite."""
    from .io import export_onnx

    rows = []
    runtimes, batch_sizes = list(runtimes), list(batch_sizes)
    with tempfile.TemporaryDirectory() as d:
        if "onnx" in runtimes and kw.get("onnx_path") is None and str(kw.get("device", "cpu")) == "cpu":
            kw = dict(kw, onnx_path=export_onnx(model.eval(), Path(d) / "model.onnx"))
        for runtime in runtimes:
            for b in batch_sizes:
                try:
                    rows.append(measure_latency(model, batch_size=b, runtime=runtime, **kw))
                except NuwaError as e:
                    if on_error != "record" or runtime != "compile":
                        raise
                    rows.append(dict(runtime=runtime, batch_size=b, error=str(e)))
    return rows


def onnx_op_profile(model: EdgeViT, *, batch_size: int = 16, threads: int | None = None, repeats: int = 3) -> dict:
    """Where ONNX Runtime spends the time: milliseconds per run by operator type (MatMul, Softmax,
    LayerNormalization, ...), from its own profiler, averaged over `repeats` runs after one warm-up.
    Shows what a FLOPs count leaves out when a speedup falls short of the FLOPs ratio."""
    import json as _json

    from .io import export_onnx

    threads = threads or torch.get_num_threads()
    cfg = model.config
    x = torch.randn(batch_size, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(0)).numpy()
    with tempfile.TemporaryDirectory() as d:
        sess = onnx_session(export_onnx(model.eval(), Path(d) / "model.onnx"), threads, str(Path(d) / "prof"))
        sess.run(None, {"images": x})
        for _ in range(repeats):
            sess.run(None, {"images": x})
        events = _json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    runs = 0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs += 1
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3
    runs = max(runs, 1)
    return {op: ms / runs for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])}
