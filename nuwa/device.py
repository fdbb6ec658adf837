"""Where a command computes, and how: the device (`--device auto|cpu|cuda|cuda:N|mps`), bf16
autocast on CUDA (`--amp/--no-amp`), CUDA determinism (`--deterministic`) and data-loader
workers (`--workers`), as one `Runtime`.

A command enters `use(runtime)` once; the library's loops then read `current()`: the model is
moved to the device where a command starts, batches follow the model, and `autocast(device)`
wraps the forward passes of training, scoring and evaluation. Everything that must stay exact
(the SVDs, the ridge solves, the schedule's cost arithmetic) runs outside autocast in float32
or float64. On the CPU nothing changes: autocast is CUDA-only, so CPU results are the same
bit for bit with and without `--amp`.

`check_spec` is pure Python, so the CLI refuses a malformed device before torch loads; whether
the device exists is known only once torch is imported (`Runtime.resolve`).
"""
from __future__ import annotations

import contextlib
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from .errors import NuwaError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DEVICE_HELP = ("where to compute: auto (CUDA if available, then MPS, then CPU; default), cpu, cuda, "
               "cuda:N or mps")
_SPEC = re.compile(r"auto|cpu|cuda|cuda:\d+|mps")
# cuBLAS is deterministic only with a fixed workspace, and only if this is set before it starts.
_CUBLAS_WORKSPACE = ":4096:8"


def check_spec(spec: str) -> str:
    """`spec` if it names a device kind nuwa knows, else a one-line error naming it."""
    if not isinstance(spec, str) or not _SPEC.fullmatch(spec):
        raise NuwaError(f"--device {spec!r}: expected one of {', '.join(DEVICES)}")
    return spec


@dataclass(frozen=True)
class Runtime:
    """How a command computes. `amp`: bf16 autocast on CUDA (never on the CPU or MPS);
    `deterministic`: torch's deterministic algorithms on CUDA (the CPU already is);
    `workers`: data-loader worker processes for files decoded per batch (None: min(2, cpus))."""

    device: str = "auto"
    amp: bool = True
    deterministic: bool = False
    workers: int | None = None

    def __post_init__(self) -> None:
        check_spec(self.device)
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise NuwaError(f"--workers {self.workers!r} must be an integer >= 0")

    def resolve(self) -> "torch.device":
        """The torch device, or a one-line error when this machine has no such device."""
        import torch

        spec = self.device
        if spec == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        if spec == "cpu":
            return torch.device("cpu")
        if spec == "mps":
            if not _mps_available():
                raise NuwaError("--device mps: this machine has no MPS device (torch.backends.mps.is_available() "
                                "is False)")
            return torch.device("mps")
        if not torch.cuda.is_available():
            raise NuwaError(f"--device {spec}: this machine has no CUDA device (torch.cuda.is_available() is False)")
        index = int(spec.split(":")[1]) if ":" in spec else torch.cuda.current_device()
        count = torch.cuda.device_count()
        if index >= count:
            have = ", ".join(f"cuda:{i}" for i in range(count))
            raise NuwaError(f"--device {spec}: this machine has {count} CUDA device{'s' if count != 1 else ''} ({have})")
        return torch.device("cuda", index)


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


_current: ContextVar[Runtime] = ContextVar("nuwa_runtime", default=Runtime(device="auto"))


def current() -> Runtime:
    """The runtime of the enclosing `use` (default: `Runtime()`, device auto, amp on)."""
    return _current.get()


@contextlib.contextmanager
def use(runtime: Runtime) -> Iterator["torch.device"]:
    """Compute under `runtime` for the duration; yields the resolved torch device.

    With `deterministic` on a CUDA device, torch's deterministic algorithms are switched on (an
    operation without a deterministic CUDA kernel then raises) and cuDNN's autotuner off, and
    restored afterwards."""
    import torch

    device = runtime.resolve()
    token = _current.set(runtime)
    restore = None
    if runtime.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
        restore = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield device
    finally:
        if restore is not None:
            torch.use_deterministic_algorithms(restore[0])
            torch.backends.cudnn.benchmark = restore[1]
        _current.reset(token)


def device() -> "torch.device":
    """The resolved device of the current runtime."""
    return current().resolve()


def autocast(device: "torch.device") -> contextlib.AbstractContextManager:
    """bf16 autocast for forward passes on a CUDA `device` when the runtime's amp is on; a no-op
    anywhere else (CPU results stay exactly as without it)."""
    if device.type != "cuda" or not current().amp:
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16)


def to_device(x: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """`x` on `device`; from a CPU tensor to CUDA through pinned memory without blocking the host."""
    if x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def set_runtime(runtime: Runtime) -> "torch.device":
    """Make `runtime` the current one for the rest of this context (a workflow job's process),
    without a `with` block; returns its resolved device."""
    device = runtime.resolve()
    _current.set(runtime)
    return device
