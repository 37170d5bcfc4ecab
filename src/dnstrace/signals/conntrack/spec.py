"""The conntrack signal declared once: its options (config keys and flags), columns, filter and ``SIGNAL``."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import TIME_COLUMN, Column
from dnstrace.flow import Source
from dnstrace.signals.base import Flag, SignalSpec, option
from dnstrace.signals.conntrack.source import DEFAULT_INTERVAL_NS, ConntrackSource
from dnstrace.units import parse_duration_ns


@dataclass(frozen=True)
class ConntrackOptions:
    interval_ns: int = option(DEFAULT_INTERVAL_NS, Flag(
        "--interval", "how often to read the counters (default 1s; the agent uses agent.conntrack_interval)",
        metavar="DUR", parse=parse_duration_ns))
    every_interval: bool = option(False, Flag(
        "--every-interval", "report every namespace every interval, even when nothing moved"))
    with_drops: bool = option(True, Flag(
        "--no-drops", "do not trace the packets netfilter drops (skb:kfree_skb NETFILTER_DROP)"))


def make_sources(options: ConntrackOptions) -> list[Source]:
    sources: list[Source] = [ConntrackSource(options.interval_ns, options.every_interval)]
    if options.with_drops:
        from dnstrace.signals.drops.source import DropsSource  # noqa: PLC0415

        sources.append(DropsSource(reasons=["NETFILTER_DROP"], explain=False))
    return sources


SIGNAL = SignalSpec(
    name="conntrack",
    help="conntrack insert failures, drops and table pressure per network namespace",
    description=(
        "Conntrack statistics of every network namespace on the node (those of processes and the named\n"
        "ones under /run/netns and the container runtimes' directories), as deltas per interval:\n"
        "insert_failed, drop, early_drop, invalid, clash_resolve, search_restart, and the table's count/max.\n"
        "A namespace is reported when a counter moved or its table is over 80% full. Also streams the\n"
        "packets netfilter dropped (drop events, reason NETFILTER_DROP) with their flow and, when the\n"
        "drop happened in the sender's context, its process (attribution = exact / flow / none)."
    ),
    columns=(
        TIME_COLUMN,
        Column("kind", "EVENT", 9),
        Column("netns", "NETNS", 26),
        Column("insert_failed", "INS_FAIL", 8),
        Column("drop", "DROP", 6),
        Column("early_drop", "EARLY", 6),
        Column("clash_resolve", "CLASH_OK", 8),
        Column("count", "COUNT", 8),
        Column("max", "MAX", 8),
        Column("saddr", "SOURCE", 15),
        Column("daddr", "DESTINATION", 15),
        Column("comm", "COMM", 15),
    ),
    options=ConntrackOptions,
    make_sources=make_sources,
    config_options={"agent.conntrack_interval": "interval_ns"},
    examples=(
        "dnstrace trace conntrack                 # insert failures and table-full drops as they happen",
        "dnstrace trace conntrack --every-interval --interval 5s --json",
    ),
)
