"""Parse and format durations and sizes the way users type them: ``1s``, ``250ms``, ``10m``, ``64MiB``."""

from __future__ import annotations

import re
from datetime import datetime

from dnstrace.errors import UsageError

_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86400 * 1_000_000_000,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration_ns(text: str | int | float, default_unit: str = "s") -> int:
    """``"1.5s"`` -> 1_500_000_000. A bare number uses ``default_unit``."""
    if isinstance(text, (int, float)):
        return int(text * _DURATION_UNITS_NS[default_unit])
    match = _DURATION_RE.match(text)
    if not match:
        raise UsageError(f"not a duration: {text!r}", hint="use e.g. 500ms, 2s, 10m, 1h")
    value, unit = match.groups()
    ns = float(value) * _DURATION_UNITS_NS[unit or default_unit]
    if not ns < 2**63:  # also refuses inf and nan
        raise UsageError(f"duration out of range: {text!r}", hint="at most about 292 years")
    return int(ns)


def parse_duration_s(text: str | int | float) -> float:
    return parse_duration_ns(text) / 1e9


def parse_size(text: str | int) -> int:
    """``"64MiB"`` -> 67108864 bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise UsageError(f"not a size: {text!r}", hint="use e.g. 512MiB, 2GiB, 100000")
    value, unit = match.groups()
    return int(float(value) * _SIZE_UNITS[unit.lower()])


def format_duration_ns(ns: int | float | None) -> str:
    """Short human form: 850ns, 12.3µs, 4.5ms, 5.00s, 2m03s."""
    if ns is None:
        return "-"
    ns = float(ns)
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f}µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f}ms"
    if ns < 60e9:
        return f"{ns / 1e9:.2f}s"
    minutes, seconds = divmod(ns / 1e9, 60)
    return f"{int(minutes)}m{int(seconds):02d}s"


def split_csv(values: list[str] | None) -> list[str]:
    """``['a,b', ' c']`` -> ``['a', 'b', 'c']``: repeated flags and comma lists alike."""
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def parse_time_ns(text: str, now_ns: int) -> int:
    """``10m`` (ago), ``2024-05-01T12:00:00`` (local time, or with offset) or unix seconds ``@1714564800``."""
    text = text.strip()
    if text.startswith("@"):
        try:
            seconds = float(text[1:])
        except ValueError:
            raise UsageError(f"not a unix time: {text!r}") from None
        if not 0 <= seconds < 2**63 / 1e9:  # also refuses inf and nan
            raise UsageError(f"unix time out of range: {text!r}", hint="seconds since 1970, before the year 2262")
        return int(seconds * 1e9)
    if text and text[0].isdigit() and ("-" in text[1:] or "T" in text):
        try:
            return int(datetime.fromisoformat(text).timestamp() * 1e9)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"not a time: {text!r}", hint="use 10m (ago), 2024-05-01T12:00:00 or @UNIXSECONDS") from None
    return now_ns - parse_duration_ns(text)


def parse_addr(addr: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; an empty host = every address) of config key ``key``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"{key}: expected HOST:PORT, got {addr!r}", hint="e.g. 127.0.0.1:9465")
    return host.strip("[]") or "0.0.0.0", int(port)
