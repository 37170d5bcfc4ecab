"""Run a set of event sources until told to stop, and detach every probe on the way out.

A *source* owns one signal's BPF programs (or /proc readers) and turns what the
kernel reports into event dicts (see ``dnstrace.events``). The runner starts the
sources, waits on their ring-buffer fds with epoll, hands batches of events to a
callback, calls a tick callback about once a second, and on SIGTERM/SIGINT (or
when the duration is up) closes every source, which detaches its probes.
"""

from __future__ import annotations

import gc
import select
import time
from collections.abc import Callable, Iterable

from dnstrace import log
from dnstrace.flow import Source
from dnstrace.log import status
from dnstrace.stop import StopFlag, install_signal_handlers, restore_signal_handlers


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
