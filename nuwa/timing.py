"""Where a derivation's time and memory go: wall-clock seconds and peak resident memory per phase."""
from __future__ import annotations

import contextlib
import sys
import time


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (ru_maxrss), in MiB; None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


class PhaseTimer:
    """Wall-clock seconds per phase, and the process's peak resident memory when each phase
    last ended (`peak_rss_mb`: the first phase whose value jumps is the one that needed it)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float | None] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
            self.peak_rss_mb[phase] = peak_rss_mb()
