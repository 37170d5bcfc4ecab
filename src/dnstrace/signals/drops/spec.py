"""The drops signal declared once: its options (config keys and flags), columns, filter and ``SIGNAL``."""

from __future__ import annotations

from dataclasses import dataclass

from dnstrace.columns import PROCESS_COLUMNS, TIME_COLUMN, Column, fmt_bool
from dnstrace.flow import Source
from dnstrace.signals.base import Event, EventFilter, Flag, SignalSpec, option
from dnstrace.signals.drops.source import DEFAULT_EVENT_BUDGET, DEFAULT_REASONS, DropsSource


@dataclass(frozen=True)
class DropsOptions:
    reasons: tuple[str, ...] = option((), Flag(
        "--reason", "drop reason to trace, as the kernel names it (repeatable; default: " + ", ".join(DEFAULT_REASONS) + ")",
        metavar="NAME", repeat=True))
    event_budget: int = option(DEFAULT_EVENT_BUDGET, Flag(
        "--event-budget", f"events per (reason, process, device) and second before sampling (default {DEFAULT_EVENT_BUDGET})",
        metavar="N", parse=int))
    explain: bool = option(True, Flag(
        "--no-explain", "do not look up devices (addresses, rp_filter) to explain rp_filter drops"))
    iifs: tuple[str, ...] = option((), Flag("--iif", "only drops received on this device name (repeatable)",
                                            metavar="DEV", repeat=True))


def make_sources(options: DropsOptions) -> list[Source]:
    return [DropsSource(reasons=list(options.reasons) or None, event_budget=options.event_budget,
                        explain=options.explain)]


def make_filter(options: DropsOptions) -> EventFilter:
    devices = set(options.iifs)

    def keep(event: Event) -> bool:
        return not devices or event.get("iif_name") in devices

    return keep


SIGNAL = SignalSpec(
    name="drops",
    help="packets dropped by routing (rp_filter, martians) and netfilter, with the reason",
    description=(
        "One line per dropped packet with its kernel drop reason (skb:kfree_skb; reason names read from\n"
        "this kernel's tracefs), addresses, ingress device and, for reverse-path-filter drops, where the\n"
        "return route points and why (e.g. loose rp_filter acting as strict on a device without IPv4\n"
        "address). Addresses come from the fib:fib_table_lookup and net:netif_receive_skb tracepoints.\n"
        "Under storms each (reason, process, device) gets --event-budget events per second; the rest is reported\n"
        "once a second as aggregated events (count, sampled = yes)."
    ),
    columns=(
        TIME_COLUMN, *PROCESS_COLUMNS,
        Column("reason", "REASON", 16),
        Column("saddr", "SOURCE", 15),
        Column("daddr", "DESTINATION", 15),
        Column("iif_name", "IIF", 8),
        Column("return_dev", "BACK VIA", 8),
        Column("count", "COUNT", 6),
        Column("sampled", "SAMPLED", 7, fmt_bool),
        Column("why", "WHY", 40),
    ),
    options=DropsOptions,
    make_sources=make_sources,
    make_filter=make_filter,
    examples=(
        "dnstrace trace drops --reason IP_RPFILTER     # martians and why",
        "dnstrace trace drops --reason NETFILTER_DROP --json",
    ),
)
