"""``agent.ship = summary``: per-interval rollups of every event, raw events only for what an incident needs.

At fleet scale most events are healthy and alike: a fast NOERROR lookup of a name
resolved a thousand times a minute. In summary mode the shipper passes each event
through ``Summarizer.take``. It is shipped raw when an incident needs it:

- it went wrong (``events.is_failed``: an error, a non-NOERROR rcode, unanswered,
  a failed connect, a drop), or it is slow (latency at least ``agent.summary_slow``);
- it is a truncated (TC) or retransmitted DNS exchange, or a connect with SYN retries;
- it is of a kind that is rare by nature (findings, drops, SYN retries, agent and
  conntrack reports: anything but gai/dns/lookup/connect);
- or it is picked as a sample of the rest: 1 in ``agent.summary_sample``, at most
  ``SAMPLE_MAX_PER_INTERVAL`` an interval.

Every other event is counted into rollup rows with exactly the collector's dimensions
and latency buckets (``wire.rollup``, on the grid of ``dnstrace.latency``), shipped every ``agent.summary_interval``
in the same batch as raw events (layout version 3). The collector adds them to its
rollups as they are and rolls the raw ones up itself, so rollup answers (``dnstrace
query --top/--bucket`` over whole minutes) count every event once; slow and failed
lookups stay queryable raw with their attempts. What is not raw is not queryable by
pid, name, address, rule or minimum latency: those filters answer from raw events.
"""

from __future__ import annotations

from typing import Any

from dnstrace.events import is_failed
from dnstrace.latency import bucket_of
from dnstrace.wire.codec import _INT_MAX, _INT_MIN
from dnstrace.wire.rollup import DIMENSIONS, MINUTE_NS, ROW_COLUMNS

SUMMARIZED_KINDS = frozenset(("gai", "dns", "lookup", "connect"))
SAMPLE_MAX_PER_INTERVAL = 1000
_DIMS = tuple(d for d in DIMENSIONS if d != "host")  # the batch envelope names the host


def _text(value):
    return value if type(value) is str else None  # what the codec stores in a string column


def _latency(value):
    return value if type(value) is int and _INT_MIN <= value <= _INT_MAX else None


class Summarizer:
    def __init__(self, slow_ns: int, sample_every: int = 100):
        self.slow_ns = slow_ns
        self.sample_every = max(1, sample_every)
        self._rows: dict[tuple[Any, ...], list[Any]] = {}  # key -> [events, latency_max (or None)]
        self._healthy_seen = 0
        self._sampled = 0
        self._newest_minute = 0
        self.counters = {"events_raw": 0, "events_sampled": 0, "events_summarized": 0, "rollup_rows": 0}

    def needs_raw(self, event: dict) -> bool:
        if event.get("kind") not in SUMMARIZED_KINDS or is_failed(event):
            return True
        latency = event.get("latency_ns")
        if type(latency) is int and latency >= self.slow_ns:
            return True
        return bool(event.get("tc") or event.get("retransmit") or event.get("retries"))

    def take(self, events: list[dict]) -> list[dict]:
        """The events to ship raw; the rest are counted into this interval's rollup rows."""
        raw = []
        rows = self._rows
        for event in events:
            if self.needs_raw(event):
                raw.append(event)
                self.counters["events_raw"] += 1
                continue
            self._healthy_seen += 1
            if self._healthy_seen % self.sample_every == 0 and self._sampled < SAMPLE_MAX_PER_INTERVAL:
                self._sampled += 1
                raw.append(event)
                self.counters["events_sampled"] += 1
                continue
            minute = (event["ts"] // MINUTE_NS) * MINUTE_NS
            if minute > self._newest_minute:
                self._newest_minute = minute
            latency = _latency(event.get("latency_ns"))
            key = (minute, *(_text(event.get(d)) for d in _DIMS), False,
                   None if latency is None else bucket_of(latency))
            row = rows.get(key)
            if row is None:
                rows[key] = [1, latency]
            else:
                row[0] += 1
                if latency is not None and (row[1] is None or latency > row[1]):
                    row[1] = latency
            self.counters["events_summarized"] += 1
        return raw

    def pending(self) -> bool:
        return bool(self._rows)

    def drain(self, final: bool = False) -> dict[str, list] | None:
        """Rollup rows of the minutes that are over as columns (``rollup.ROW_COLUMNS``), or None.

        The newest minute seen stays open (unless ``final``): an interval that is not aligned with minutes
        would otherwise ship each minute as two sets of rows.
        """
        self._sampled = 0
        if final:
            ready, self._rows = self._rows, {}
        else:
            ready = {k: v for k, v in self._rows.items() if k[0] < self._newest_minute}
            self._rows = {k: v for k, v in self._rows.items() if k[0] >= self._newest_minute}
        if not ready:
            return None
        names = [name for name, _ in ROW_COLUMNS]
        columns: dict[str, list] = {name: [] for name in names}
        key_names = names[:-2]  # minute, dims..., failed, lat_bucket
        for key, (count, latency_max) in ready.items():
            for name, value in zip(key_names, key, strict=False):
                columns[name].append(value)
            columns["events"].append(count)
            columns["latency_max"].append(latency_max)
        self.counters["rollup_rows"] += len(ready)
        return columns
