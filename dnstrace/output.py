"""Write events to stdout: one JSON object per line, or a readable aligned table.

stdout carries only events (scripts read it); status goes to stderr via ``status()``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TextIO

from dnstrace.units import format_duration_ns


def status(message: str) -> None:
    """A status line for people and scripts watching stderr."""
    print(message, file=sys.stderr, flush=True)


def _json_default(value: Any):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(event: dict) -> str:
    """One JSON object; NaN and infinities (not JSON) become null."""
    try:
        return json.dumps(event, default=_json_default, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(event), default=_json_default, separators=(",", ":"))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass(frozen=True)
class Column:
    field: str
    header: str
    width: int
    fmt: Callable[[Any], str] = lambda v: "-" if v is None else str(v)


def fmt_time(ts_ns: int | None) -> str:
    if not ts_ns:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts_ns / 1e9)) + f".{int(ts_ns % 1e9 / 1e6):03d}"


def fmt_latency(ns: int | None) -> str:
    return format_duration_ns(ns)


def fmt_bool(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


TIME_COLUMN = Column("ts", "TIME", 12, fmt_time)
PROCESS_COLUMNS = (Column("pid", "PID", 7), Column("comm", "COMM", 15))


class EventWriter:
    """Prints events as JSON lines or as a table with the given columns."""

    def __init__(self, json_lines: bool, columns: Iterable[Column] = (), out: TextIO | None = None):
        self.json_lines = json_lines
        self.columns = tuple(columns)
        self.out = out or sys.stdout
        self._header_done = False

    def write(self, event: dict) -> None:
        """Buffered: call ``flush()`` after each batch (one flush per batch, not per event)."""
        if self.json_lines:
            self.out.write(to_json(event) + "\n")
            return
        if not self._header_done:
            self.out.write(self._row({c.field: c.header for c in self.columns}, header=True) + "\n")
            self._header_done = True
        self.out.write(self._row(event) + "\n")

    def flush(self) -> None:
        self.out.flush()

    def _row(self, event: dict, header: bool = False) -> str:
        cells = []
        for i, col in enumerate(self.columns):
            text = event.get(col.field) if header else col.fmt(event.get(col.field))
            text = str(text)
            last = i == len(self.columns) - 1
            cells.append(text if last else text[: col.width].ljust(col.width))
        return " ".join(cells)
