"""Columns of a signal's table output (``dnstrace trace <signal>``): a field, a header, a width, a format.

A signal declares its columns as data next to its events; the CLI's table writer
(``dnstrace.cli.output``) lays them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnstrace.units import format_duration_ns


def _default_fmt(value: Any) -> str:
    return "-" if value is None else str(value)


@dataclass(frozen=True)
class Column:
    field: str
    header: str
    width: int
    fmt: Callable[[Any], str] = _default_fmt


class _SecondCache:
    """HH:MM:SS of the last second formatted: a stream's events share their second."""

    second = -1
    text = ""


_clock = _SecondCache()


def fmt_time(ts_ns: int | None) -> str:
    if not ts_ns:
        return "-"
    second, rest = divmod(ts_ns, 1_000_000_000)
    if second != _clock.second:
        _clock.text = time.strftime("%H:%M:%S", time.localtime(second))
        _clock.second = second
    return f"{_clock.text}.{rest // 1_000_000:03d}"


def fmt_latency(ns: int | None) -> str:
    return format_duration_ns(ns)


def fmt_bool(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


TIME_COLUMN = Column("ts", "TIME", 12, fmt_time)
PROCESS_COLUMNS = (Column("pid", "PID", 7), Column("comm", "COMM", 15))
