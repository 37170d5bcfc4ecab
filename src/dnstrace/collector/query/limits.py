"""What bounds one query on the collector: a deadline, cancellation, and a size bound on its result.

The server makes a ``QueryControl`` per query and hands it to the store; the store
(``Store.query``) makes it the current control of the query thread, and a backend
that can interrupt its engine (DuckDB) binds its interrupt function to it and charges
fetched rows as they arrive. ``cancel`` (deadline passed, client gone) interrupts
the running statement; ``charge`` stops a result whose estimated size passes
``max_bytes`` before it is all in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

_ROW_OVERHEAD = 120  # bytes a fetched row costs beyond its values (tuple, then dict), roughly
_VALUE_OVERHEAD = 40


class QueryStopped(Exception):
    """Stopped while running: ``deadline`` True for time, False for size; or cancelled."""

    def __init__(self, message: str, deadline: bool):
        super().__init__(message)
        self.deadline = deadline


class QueryControl:
    def __init__(self, timeout_s: float, max_bytes: int):
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._interrupt: Callable[[], object] | None = None
        self._reason: str | None = None

    def bind(self, interrupt: Callable[[], object] | None) -> None:
        """``interrupt()`` stops the statement now running in the engine (called from another thread)."""
        with self._lock:
            self._interrupt = interrupt
            reason = self._reason
        if reason is not None and interrupt is not None:
            interrupt()

    def unbind(self) -> None:
        with self._lock:
            self._interrupt = None

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt()

    def stopped(self) -> bool:
        if self._reason is None and time.monotonic() >= self.deadline:
            self.cancel("deadline")
        return self._reason is not None

    def stop_reason(self) -> QueryStopped:
        if self._reason == "deadline":
            return QueryStopped(f"the query ran past its deadline of {self.timeout_s:.1f} s", deadline=True)
        if self._reason and self._reason.startswith("size"):
            return QueryStopped(self._reason[len("size: "):], deadline=False)
        return QueryStopped(f"cancelled: {self._reason}", deadline=False)

    def charge(self, rows: Sequence[Any]) -> None:
        """Count fetched rows; raises ``QueryStopped`` past the bounds or once cancelled."""
        size = 0
        for row in rows:
            size += _ROW_OVERHEAD
            for value in row:
                size += _VALUE_OVERHEAD + (len(value) if isinstance(value, (str, bytes)) else 8)
        self.rows += len(rows)
        self.bytes += size
        if self.bytes > self.max_bytes:
            self.cancel(f"size: the result would exceed this collector's bound of {self.max_bytes >> 20} MiB "
                        f"(narrow the time range or filters, or lower --limit)")
        if self.stopped():
            raise self.stop_reason()


_current = threading.local()


def current() -> QueryControl | None:
    """The control of the query running in this thread, if any."""
    return getattr(_current, "control", None)


def set_current(control: QueryControl | None) -> None:
    _current.control = control
