"""The dns signal declared for ``dnstrace trace dns`` and the agent: its options, filter and columns."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_latency
from dnstrace.config import KEYS_BY_NAME
from dnstrace.flow import Source
from dnstrace.signals.dns.source import DnsWireSource
from dnstrace.signals.registry import TraceTarget


def dns_ports(args: argparse.Namespace) -> list[int]:
    """The configured DNS ports (``agent.dns_ports``, or its default under `dnstrace trace`) plus ``--port``."""
    return list(dict.fromkeys([*args.dns_ports, *(args.port or ())]))


def make_sources(args: argparse.Namespace) -> list[Source]:
    return [DnsWireSource(ports=dns_ports(args))]


def add_port_arguments(parser: argparse.ArgumentParser) -> None:
    """``--port`` (extra ports) and the hidden ``dns_ports`` the agent sets from ``agent.dns_ports``."""
    parser.add_argument("--port", type=int, action="append", default=None, metavar="PORT",
                        help="also trace this port as DNS (repeatable), e.g. 8600 for Consul")
    parser.set_defaults(dns_ports=KEYS_BY_NAME["agent.dns_ports"].default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_port_arguments(parser)
    parser.add_argument("--unanswered", action="store_true", help="only queries that got no answer")


def make_filter(args: argparse.Namespace) -> Callable[[dict[str, object]], bool] | None:
    if not args.unanswered:
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

TRACE = TraceTarget(
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
    make_sources=make_sources,
    add_arguments=add_arguments,
    config_options={"agent.dns_ports": "dns_ports"},
    make_filter=make_filter,
    examples=(
        "dnstrace trace dns",
        "dnstrace trace dns --json --pid 4711",
        "dnstrace trace dns --port 8600 --unanswered",
    ),
)
