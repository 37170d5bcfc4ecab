"""Write events to stdout: one JSON object per line, or a readable aligned table.

stdout carries only events (scripts read it); status goes to stderr via ``dnstrace.log.status()``.

``EventWriter`` works per batch (one ring-buffer drain): the whole batch is encoded
in one call (msgspec's ``encode_lines`` for JSON, a precompiled row template for
tables) and handed to an ``OutputPipe`` as one chunk. The pipe writes from its own
thread with a bounded backlog, so a terminal or pipe slower than the events never
stalls the event loop (and with it the kernel's ring buffers): batches that do not
fit the backlog are dropped, counted, and said on stderr at most once a second.
"""

from __future__ import annotations

import collections
import errno
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

import msgspec

from dnstrace.columns import Column
from dnstrace.log import status


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


def _encode_hook(value: Any):
    # msgspec encodes str, int, float, bool, None, list, tuple, dict, set natively
    # (and bytes as base64: events carry text, their decoders turn raw bytes into str).
    return str(value)


_BATCH_ENCODER = msgspec.json.Encoder(enc_hook=_encode_hook)


def json_lines(events: list[dict]) -> bytes:
    """A batch of events as JSON lines, in one encoder call (no per-event Python)."""
    return _BATCH_ENCODER.encode_lines(events)


class OutputPipe:
    """Bytes to a file descriptor from a writer thread, with a bounded backlog.

    ``offer`` never blocks: a chunk that would push the backlog past ``max_backlog``
    bytes is dropped and its events counted in ``dropped_events``. A closed reader
    (EPIPE) sets ``broken``; the caller stops. ``close`` writes what is still queued."""

    def __init__(self, fd: int, max_backlog: int = 16 << 20):
        self.fd = fd
        self.max_backlog = max_backlog
        self.backlog = 0
        self.dropped_events = 0
        self.dropped_chunks = 0
        self.broken = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dnstrace-output", daemon=True)
        self._thread.start()

    def offer(self, chunk: bytes, events: int) -> bool:
        with self._cond:
            if self.broken:
                return False
            if self.backlog and self.backlog + len(chunk) > self.max_backlog:
                self.dropped_events += events
                self.dropped_chunks += 1
                return False
            self._chunks.append(chunk)
            self.backlog += len(chunk)
            self._cond.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks and not self._closing:
                    self._cond.wait()
                if not self._chunks:
                    return
                # Join what waits into one write: fewer syscalls when the reader is slow.
                data = b"".join(self._chunks)
                self._chunks.clear()
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except OSError as err:
                with self._cond:
                    self.broken = True
                    self._chunks.clear()
                    self.backlog = 0
                if err.errno not in (errno.EPIPE, errno.ECONNRESET):
                    status(f"dnstrace: error: writing the output failed: {err.strerror}")
                return
            with self._cond:
                self.backlog -= len(data)

    def close(self, timeout_s: float = 5.0) -> int:
        """Write what is queued (waiting at most ``timeout_s``); returns the bytes left unwritten."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        with self._cond:
            return self.backlog if self._thread.is_alive() else 0


class EventWriter:
    """Prints batches of events as JSON lines or as a table with the given columns.

    ``out``: a text stream written synchronously (tests, small outputs); by default the
    process's stdout through an ``OutputPipe`` (never blocks the caller, drops counted)."""

    def __init__(self, json_lines: bool, columns: Iterable[Column] = (), out: TextIO | None = None,
                 max_backlog: int = 16 << 20, warn_interval_s: float = 1.0):
        self.json_lines = json_lines
        self.columns = tuple(columns)
        self.out: TextIO = out or sys.stdout  # written directly when there is no pipe
        self.pipe: OutputPipe | None = None
        if out is None:
            sys.stdout.flush()
            try:
                fd = sys.stdout.fileno()
            except (AttributeError, OSError, ValueError):  # stdout replaced by a non-file (embedding, capture)
                pass
            else:
                self.pipe = OutputPipe(fd, max_backlog)
        self._header_done = False
        self._fmts = tuple((c.field, c.fmt) for c in self.columns)
        # One str.format call per row: each cell cut and padded to its width, the last one free.
        specs = [f"{{:<{c.width}.{c.width}}}" for c in self.columns[:-1]] + ["{}"] * bool(self.columns)
        self._row_template = " ".join(specs)
        self.warn_interval_s = warn_interval_s
        self._warned_at: float | None = None

    @property
    def broken(self) -> bool:
        """The reader went away (e.g. ``| head``): nothing more can be written."""
        return bool(self.pipe and self.pipe.broken)

    def write_batch(self, events: list[dict]) -> None:
        if not events:
            return
        if self.json_lines:
            data = json_lines(events)
        else:
            data = self._table(events).encode("utf-8", "replace")
        if self.pipe is None:
            self.out.write(data.decode("utf-8"))
            self.out.flush()
            return
        if not self.pipe.offer(data, len(events)):
            self._warn_dropped()

    def write(self, event: dict) -> None:
        self.write_batch([event])

    def close(self) -> None:
        """Write what is queued, then say how many events the output could not take."""
        if self.pipe is not None:
            stuck = self.pipe.close()
            if stuck:
                status(f"dnstrace: output: {stuck} bytes of events not written at exit (stdout blocked)")
            if self.pipe.dropped_events:
                status(f"dnstrace: output: {self.pipe.dropped_events} events not written "
                       f"(stdout slower than the events, {self.pipe.dropped_chunks} batches dropped)")

    def _warn_dropped(self) -> None:
        assert self.pipe is not None  # only a pipe drops
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < self.warn_interval_s:
            return
        self._warned_at = now
        status(f"dnstrace: output is slower than the events: {self.pipe.dropped_events} events not written "
               "so far (whole batches dropped; the ring buffers keep draining)")

    def _table(self, events: list[dict]) -> str:
        template = self._row_template.format
        fmts = self._fmts
        rows = [template(*[fmt(get(field)) for field, fmt in fmts]) for get in (e.get for e in events)]
        if not self._header_done:
            rows.insert(0, template(*[c.header for c in self.columns]))
            self._header_done = True
        rows.append("")
        return "\n".join(rows)
