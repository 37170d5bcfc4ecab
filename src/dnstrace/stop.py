"""Ending a long-running process cleanly: a stop flag that SIGTERM and SIGINT set."""

from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by SIGTERM/SIGINT (or by code) to end a run."""

    def __init__(self):
        self._event = threading.Event()

    def set(self, *_args) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def install_signal_handlers(stop: StopFlag) -> dict:
    """SIGTERM and SIGINT end the run cleanly (probes are detached in ``finally``).

    Returns the previous handlers for ``restore_signal_handlers``."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, stop.set)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
