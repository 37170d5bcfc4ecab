"""The two contracts of the data path: a Source yields batches of event dicts, a Sink takes them.

Every signal (``dnstrace.signals``) is a Source; the aggregator, Prometheus metrics,
the shipper and the findings engine are Sinks. ``dnstrace.pipeline`` connects them.
"""

from __future__ import annotations


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



class Sink:
    """Where enriched events go: the aggregator, Prometheus, the shipper, the top view.

    Modules listed in ``dnstrace.pipeline.runner.SINK_MODULES`` expose ``make_sink(config) -> Sink | None``
    (None when the config disables them).
    """

    name = "sink"

    def handle(self, events: list[dict]) -> None:
        """Take a batch of events. Must not block for long: the kernel buffers are waiting."""

    def tick(self, now_ns: int) -> list[dict] | None:
        """About once a second: flush windows, ship batches, refresh views (a Stage returns what it derived)."""

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        """Flush and release; called once on shutdown (SIGTERM too)."""


class Stage(Sink):
    """A sink whose output re-enters the stream (the findings engine: its findings are events too).

    ``tick(now_ns)`` returns derived events (may be empty) that the pipeline hands to
    every sink; ``bind(sinks)`` is called once, before any event, with those sinks.
    """

    name = "stage"

    def bind(self, sinks: list[Sink]) -> None:
        """See the sinks this stage feeds (once, when the pipeline has built them)."""

    def tick(self, now_ns: int) -> list[dict]:
        return []
