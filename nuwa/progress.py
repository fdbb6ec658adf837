"""Progress bars that read well in a terminal and in a log file.

On a terminal, tqdm redraws one line in place. Anywhere else (a Snakemake rule's log, CI, a pipe)
those redraws are carriage returns that pile thousands of updates onto one line; there each
update is its own line instead, at most one every `LOG_INTERVAL` seconds, plus the last.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Iterable, TextIO

LOG_INTERVAL = 30.0  # seconds between progress lines in a log
# Cursor movements tqdm writes to stack nested bars: meaningless in a file.
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A stream for tqdm that turns each in-place redraw into one whole line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = _ESCAPES.sub("", text.replace("\r", "")).rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def on_terminal(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
        unit: str = "it", leave: bool = True, disable: bool = False) -> Any:
    """A tqdm bar on stderr: redrawn in place on a terminal, one line per update elsewhere.
    `desc` None or `disable` gives a silent one."""
    from tqdm import tqdm

    disable = disable or desc is None
    if on_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True,
                    disable=disable)
    # In a log: a fixed width (no terminal to size it to), and the final state always written.
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=True, file=_Lines(sys.stderr), ncols=100,
                mininterval=LOG_INTERVAL, position=0, disable=disable)
