"""Losses as data: what each source (and the shipper's spool) lost since the last tick, as ``agent`` events.

``top``, ``/metrics``, the findings (marked unreliable when the agent lost DNS records) and
the collector all read these events; nothing the agent drops goes unsaid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dnstrace.flow import Sink, Source

# Source stats counters that count records the agent lost (a source's ``stats()`` key ends
# with one of these; the lookups source prefixes its parts' keys with "dns_" / "gai_").
LOSS_COUNTERS = ("ringbuf_lost", "ringbuf_full", "kernel_missed", "sampled_out", "pairs_lost", "inflight_full",
                 "inflight_evicted", "conn_table_full", "flow_table_full", "key_table_full", "spool_evicted",
                 "spool_dropped")
# Estimates derived from several counters read at different moments (they can dip or jump
# transiently): not counted, a false loss would silence real findings.
DERIVED_COUNTERS = ("kernel_inflight_evicted",)
# Losses of DNS packets/pairs: answers among them look like silence to the absence-based rules.
DNS_LOSS_COUNTERS = ("ringbuf_lost", "ringbuf_full", "kernel_missed", "pairs_lost", "inflight_evicted")


def loss_counters(stats: dict) -> dict[str, int]:
    """The loss counters among a source's stats (numbers only)."""
    return {name: value for name, value in stats.items()
            if isinstance(value, int) and not isinstance(value, bool) and name.endswith(LOSS_COUNTERS)
            and not name.endswith(DERIVED_COUNTERS)}


def dns_losses(source_name: str, losses: dict[str, int]) -> int:
    """How many of ``losses`` are DNS records (the dns source's, or the lookups source's dns_* part)."""
    total = 0
    for name, value in losses.items():
        if source_name == "dns" or name.startswith("dns_"):
            if name.endswith(DNS_LOSS_COUNTERS):
                total += value
    return total


class LossMonitor:
    """Turns the sources' loss counters into ``agent`` events (deltas since the last check).

    The agent's own losses are evidence: findings that conclude from silence need them,
    and top, metrics and the collector show them. One event per source that lost something."""

    def __init__(self, host: str = ""):
        self.host = host
        self.last: dict[str, dict[str, int]] = {}
        self.totals: dict[str, int] = {}  # per source, since start
        self.errors = 0

    def check(self, sources: Iterable[Source | Sink], now_ns: int) -> list[dict]:
        events = []
        for source in sources:
            try:
                current = loss_counters(source.stats())
            except Exception:  # a source whose stats fail must not stop the loop
                self.errors += 1
                continue
            previous = self.last.get(source.name, {})
            # only increases count: some loss figures are derived (e.g. kernel_inflight_evicted) and may dip
            deltas = {k: v - previous.get(k, 0) for k, v in current.items() if v > previous.get(k, 0)}
            self.last[source.name] = {k: max(v, previous.get(k, 0)) for k, v in current.items()}  # high-water
            if not deltas:
                continue
            lost = sum(deltas.values())
            self.totals[source.name] = self.totals.get(source.name, 0) + lost
            events.append({"kind": "agent", "ts": now_ns, "host": self.host, "pid": os.getpid(), "tid": 0,
                           "comm": "dnstrace", "container": "", "pod": "", "namespace": "",
                           "source": source.name, "losses": deltas, "lost": lost,
                           "dns_lost": dns_losses(source.name, deltas)})
        return events
