"""The tcp signal declared once: its options (config keys and flags), columns, filter and ``SIGNAL``."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_bool, fmt_latency
from dnstrace.flow import Source
from dnstrace.signals.base import Event, EventFilter, Flag, SignalSpec, option
from dnstrace.signals.tcp.source import DEFAULT_EVENT_BUDGET, RESULTS, TcpSource


@dataclass(frozen=True)
class TcpOptions:
    event_budget: int = option(DEFAULT_EVENT_BUDGET, Flag(
        "--event-budget", f"events per (pid, destination) and second before sampling (default {DEFAULT_EVENT_BUDGET})",
        metavar="N", parse=int))
    dports: tuple[int, ...] = option((), Flag("--dport", "only connects to this destination port (repeatable)",
                                              parse=int, repeat=True))
    daddrs: tuple[str, ...] = option((), Flag("--daddr", "only connects to this destination address (repeatable)",
                                              repeat=True))
    results: tuple[str, ...] = option((), Flag("--result", "only connect outcomes of this kind (syn_retry events are kept)",
                                               repeat=True, choices=RESULTS))


def make_sources(options: TcpOptions) -> list[Source]:
    return [TcpSource(event_budget=options.event_budget)]


def make_filter(options: TcpOptions) -> EventFilter:
    dports = set(options.dports)
    daddrs = set(options.daddrs)
    results = set(options.results)

    def keep(event: Event) -> bool:
        if dports and event.get("dport") not in dports:
            return False
        if daddrs and event.get("daddr") not in daddrs:
            return False
        if results and event["kind"] == "connect" and event.get("result") not in results:
            return False
        return True

    return keep


SIGNAL = SignalSpec(
    name="tcp",
    help="SYN retransmits and connect outcomes per process and destination",
    description=(
        "One line per retransmitted SYN (syn_retry) and per connect outcome (connect: established,\n"
        "refused, timeout, reset, closed, unreachable), attributed to the process that called connect().\n"
        "Captured with the sock:inet_sock_set_state, tcp:tcp_retransmit_skb, tcp:tcp_receive_reset,\n"
        "tcp:tcp_destroy_sock and sock:inet_sk_error_report tracepoints (IPv4 and IPv6).\n"
        "Under storms each (pid, destination) gets --event-budget events per second; the rest is\n"
        "reported once a second as aggregated events (count = how many, sampled = yes): counts stay exact."
    ),
    columns=(
        TIME_COLUMN, *PROCESS_COLUMNS,
        Column("kind", "EVENT", 9),
        Column("daddr", "DESTINATION", 24),
        Column("dport", "PORT", 5),
        Column("retry", "RETRY", 5),
        Column("result", "RESULT", 11),
        Column("latency_ns", "LATENCY", 9, fmt_latency),
        Column("count", "COUNT", 6),
        Column("sampled", "SAMPLED", 7, fmt_bool),
    ),
    options=TcpOptions,
    make_sources=make_sources,
    make_filter=make_filter,
    examples=(
        "dnstrace trace tcp --dport 53          # SYN retries and slow connects to resolvers (TCP DNS)",
        "dnstrace trace tcp --result timeout --json",
    ),
)
