"""Run a set of event sources until told to stop, and detach every probe on the way out.

A *source* owns one signal's BPF programs (or /proc readers) and turns what the
kernel reports into event dicts (see ``dnstrace.schema``). The runner starts the
sources, waits on their ring-buffer fds with epoll, hands batches of events to a
callback, calls a tick callback about once a second, and on SIGTERM/SIGINT (or
when the duration is up) closes every source, which detaches its probes.
"""

from __future__ import annotations

import gc
import select
import signal
import threading
import time
from typing import Callable, Iterable

from dnstrace import log
from dnstrace.output import status


class Source:
    """Base class for one signal. Subclasses override ``start``, ``poll``, ``close``."""

    #: short name used in status lines and stats, e.g. "gai", "dns", "tcp"
    name = "source"

    def start(self) -> None:
        """Compile and attach; raise ``DnstraceError`` with a clear message on failure."""

    def fds(self) -> list[int]:
        """File descriptors that become readable when events are waiting (ring buffers)."""
        return []

    def poll(self) -> list[dict]:
        """Drain what is waiting, without blocking; return the events."""
        return []

    def tick(self, now_ns: int) -> list[dict]:
        """Called about once a second: time-driven events (timeouts, counter deltas)."""
        return []

    def flush(self) -> list[dict]:
        """At shutdown, after the last poll: events held back waiting for more (e.g. joins)."""
        return []

    def stats(self) -> dict:
        """Counters about the source itself: lost events, malformed packets, evictions..."""
        return {}

    def close(self) -> None:
        """Detach everything. Must be safe to call twice and after a failed start."""


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


def tune_gc_for_event_loop() -> tuple[int, int, int]:
    """Keep the cyclic GC off the event path (measured: ~20% of a DNS flood's decode cost).

    What is loaded by now (bcc, compiled programs, modules) lives as long as the run, so
    it is frozen out of collections; the event path makes many short-lived dicts that
    reference counting frees, so young collections can run less often."""
    gc.freeze()
    threshold0, threshold1, threshold2 = gc.get_threshold()
    gc.set_threshold(max(threshold0, 20000), threshold1, threshold2)
    return threshold0, threshold1, threshold2


def restore_gc(previous_thresholds) -> None:
    """Undo ``tune_gc_for_event_loop``: frozen objects must be collectable again at exit
    (extension modules such as DuckDB's report every object still alive then as a leak)."""
    gc.unfreeze()
    gc.set_threshold(*previous_thresholds)


class Runner:
    """Starts sources, feeds their events to ``on_events``, stops and detaches on signal."""

    def __init__(self, sources: Iterable[Source], stop: StopFlag | None = None, tick_interval_s: float = 1.0,
                 coalesce_s: float = 0.002):
        self.sources = list(sources)
        self.stop = stop or StopFlag()
        self.tick_interval_s = tick_interval_s
        # After a wake-up, let a few more records arrive before draining: under a flood the
        # kernel wakes us per record (thousands/s); a 2 ms pause turns that into <= 500 drains/s.
        self.coalesce_s = coalesce_s
        self.log = log.get("runner")
        self.started: list[Source] = []
        self.closed = False

    def start(self) -> None:
        for source in self.sources:
            source.start()
            self.started.append(source)
            self.log.debug("source attached", source=source.name)

    def close(self) -> None:
        if self.closed:
            return
        for source in reversed(self.started):
            try:
                source.close()
            except Exception as err:  # keep detaching the others
                self.log.warning("detach failed", source=source.name, error=str(err))
        self.closed = True

    def run(
        self,
        on_events: Callable[[list[dict]], None],
        duration_s: float | None = None,
        on_tick: Callable[[int], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Block until stopped or ``duration_s`` passed; always detaches before returning."""
        previous_handlers = install_signal_handlers(self.stop)
        previous_gc = None
        try:
            self.start()
            previous_gc = tune_gc_for_event_loop()
            if on_ready:
                on_ready()
            else:
                status(f"dnstrace: attached ({', '.join(s.name for s in self.started)}); Ctrl-C to stop")
            self._loop(on_events, duration_s, on_tick)
        finally:
            self.close()
            restore_signal_handlers(previous_handlers)
            if previous_gc is not None:
                restore_gc(previous_gc)

    def _loop(self, on_events, duration_s, on_tick) -> None:
        poller = select.epoll()
        for source in self.started:
            for fd in source.fds():
                poller.register(fd, select.EPOLLIN)
        deadline = time.monotonic() + duration_s if duration_s else None
        next_tick = time.monotonic() + self.tick_interval_s
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if deadline and now >= deadline:
                    break
                wait = next_tick - now
                if deadline:
                    wait = min(wait, deadline - now)
                try:
                    ready = poller.poll(max(0.0, wait))
                except InterruptedError:
                    ready = []
                if ready and self.coalesce_s:
                    self.stop.wait(self.coalesce_s)
                events: list[dict] = []
                for source in self.started:
                    events.extend(source.poll())
                if time.monotonic() >= next_tick:
                    now_ns = time.time_ns()
                    for source in self.started:
                        events.extend(source.tick(now_ns))
                    next_tick = time.monotonic() + self.tick_interval_s
                    if events:
                        on_events(events)
                        events = []
                    if on_tick:
                        on_tick(now_ns)
                if events:
                    on_events(events)
        finally:
            poller.close()
        # Drain what arrived before the stop so nothing already captured is lost.
        events = []
        for source in self.started:
            events.extend(source.poll())
            events.extend(source.flush())
        if events:
            on_events(events)

    def stats(self) -> dict:
        return {source.name: source.stats() for source in self.started}


class Sink:
    """Where enriched events go: the aggregator, Prometheus, the shipper, the top view.

    Modules listed in ``agent_cmd.SINK_MODULES`` expose ``make_sink(config) -> Sink | None``
    (None when the config disables them).
    """

    name = "sink"

    def handle(self, events: list[dict]) -> None:
        """Take a batch of events. Must not block for long: the kernel buffers are waiting."""

    def tick(self, now_ns: int) -> None:
        """About once a second: flush windows, ship batches, refresh views."""

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        """Flush and release; called once on shutdown (SIGTERM too)."""
