"""The dns signal declared once: its Options (ports, ``--unanswered``), the sources they make, its columns."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency
from dnstrace.config import KEYS_BY_NAME
from dnstrace.flow import Source
from dnstrace.signals.base import EventFilter, Flag, SignalSpec, option
from dnstrace.signals.dns.source import DnsWireSource


@dataclass(frozen=True)
class DnsPortOptions:
    """The ports traced as DNS: ``agent.dns_ports`` (its default under `dnstrace trace`) plus ``--port``."""

    dns_ports: tuple[int, ...] = tuple(KEYS_BY_NAME["agent.dns_ports"].default)
    ports: tuple[int, ...] = option((), Flag("--port", "also trace this port as DNS (repeatable), e.g. 8600 for Consul",
                                             metavar="PORT", parse=int, repeat=True))

    def all_ports(self) -> list[int]:
        return list(dict.fromkeys([*self.dns_ports, *self.ports]))


@dataclass(frozen=True)
class DnsOptions(DnsPortOptions):
    unanswered: bool = option(False, Flag("--unanswered", "only queries that got no answer"))


def make_sources(options: DnsPortOptions) -> list[Source]:
    return [DnsWireSource(ports=options.all_ports())]


def make_filter(options: DnsOptions) -> EventFilter | None:
    if not options.unanswered:
        return None
    return lambda event: event.get("answered") is False


def _fmt_rcode(value: object) -> str:
    return "TIMEOUT" if value is None else str(value)


COLUMNS = (
    TIME_COLUMN, *PROCESS_COLUMNS,
    Column("proto", "PROTO", 5), Column("server", "SERVER", 22), Column("qtype", "TYPE", 5),
    Column("rcode", "RCODE", 9, _fmt_rcode), Column("latency_ns", "LATENCY", 9, fmt_latency),
    Column("qname", "QNAME", 40),
)

SIGNAL = SignalSpec(
    name="dns",
    help="DNS queries and answers on the wire, per process (UDP and TCP, IPv4 and IPv6)",
    description=(
        "One line per DNS query a process sent: its nameserver, type, answer code, latency,\n"
        "or TIMEOUT when no answer came within the timeout of the process's own resolv.conf.\n"
        "Captured with cgroup_skb programs on the cgroup v2 root: every namespace and every\n"
        "resolver (libc, Go, c-ares, dig...) is seen. JSON events carry the flags\n"
        "same_port_pair, tcp_fallback and retransmit."
    ),
    columns=COLUMNS,
    options=DnsOptions,
    make_sources=make_sources,
    config_options={"agent.dns_ports": "dns_ports"},
    make_filter=make_filter,
    examples=(
        "dnstrace trace dns",
        "dnstrace trace dns --json --pid 4711",
        "dnstrace trace dns --port 8600 --unanswered",
    ),
)
