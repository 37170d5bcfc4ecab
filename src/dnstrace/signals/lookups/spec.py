"""The lookups signal declared once: its options (config keys and flags), columns, filter and ``SIGNAL``."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency
from dnstrace.flow import Source
from dnstrace.signals.base import Event, EventFilter, SignalSpec
from dnstrace.signals.dns.source import DnsWireSource
from dnstrace.signals.dns.spec import DnsPortOptions
from dnstrace.signals.gai.source import GaiSource
from dnstrace.signals.gai.spec import LibcScanOptions
from dnstrace.signals.lookups.source import LookupsSource


@dataclass(frozen=True)
class LookupsOptions(LibcScanOptions, DnsPortOptions):  # fields: the dns ones first
    pids: tuple[int, ...] = ()  # the gai probes watch only these processes; from trace's --pid


def make_sources(options: LookupsOptions) -> list[Source]:
    gai_source = GaiSource(pids=list(options.pids), libc_rescan_interval_ns=options.libc_rescan_interval_ns)
    return [LookupsSource(DnsWireSource(ports=options.all_ports()), [gai_source])]


def make_filter(_options: LookupsOptions) -> EventFilter:
    return lambda event: event.get("kind") == "lookup"


def _fmt_attempts(attempts: list[Event] | None) -> str:
    if not attempts:
        return "-"
    parts = []
    for a in attempts:
        outcome = a.get("rcode") or "TIMEOUT"
        parts.append(f"{a.get('qtype')}@{a.get('server')}/{a.get('proto')}={outcome}")
    return " ".join(parts)


COLUMNS = (
    TIME_COLUMN, *PROCESS_COLUMNS,
    Column("latency_ns", "LATENCY", 9, fmt_latency), Column("error", "ERROR", 11),
    Column("name", "NAME", 32), Column("attempts", "ATTEMPTS", 60, _fmt_attempts),
)

SIGNAL = SignalSpec(
    name="lookups",
    help="each name lookup with its wire attempts (libc calls joined to their DNS queries)",
    description=(
        "One line per name lookup: getaddrinfo/gethostbyname calls (uprobes) joined to the DNS\n"
        "queries the process sent meanwhile (cgroup_skb): search-list expansions, A/AAAA pairs,\n"
        "every nameserver tried, timeouts, TCP retries after truncated answers. Lookups made\n"
        "without libc (Go, c-ares, dig) are grouped from the wire alone (source=wire)."
    ),
    columns=COLUMNS,
    options=LookupsOptions,
    make_sources=make_sources,
    config_options={"agent.dns_ports": "dns_ports", "agent.libc_rescan_interval": "libc_rescan_interval_ns"},
    make_filter=make_filter,
    examples=("dnstrace trace lookups", "dnstrace trace lookups --json --min-latency 1s"),
)
