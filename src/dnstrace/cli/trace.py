"""``dnstrace trace <signal>``: stream one signal's events as a table or JSON lines.

stdout carries only events; status goes to stderr, including one line once every
probe is attached ("dnstrace: attached ...") so scripts can wait for it.
Ctrl-C / SIGTERM detaches every probe and exits 0; so does the reader of stdout
going away (``| head``).

Each ring-buffer drain is one batch: filtered with one comprehension (none at all
when no filter is given) and encoded and written in one piece by ``EventWriter``.
When stdout cannot keep up, whole batches are dropped, counted and said on stderr;
the kernel's ring buffers keep being drained either way.
"""

from __future__ import annotations

import argparse
import importlib

from dnstrace.cli.output import EventWriter
from dnstrace.log import status
from dnstrace.pipeline.loop import Runner
from dnstrace.signals.registry import TraceTarget
from dnstrace.units import parse_duration_ns, parse_duration_s

TARGET_MODULES = (
    "dnstrace.signals.gai.source",
    "dnstrace.signals.dns.spec",
    "dnstrace.signals.lookups.source",
    "dnstrace.signals.tcp.source",
    "dnstrace.signals.drops.source",
    "dnstrace.signals.conntrack.source",
)


def load_targets() -> list[TraceTarget]:
    return [importlib.import_module(name).TRACE for name in TARGET_MODULES]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "trace", help="stream one signal's events (gai, dns, lookups, tcp, drops, conntrack)",
        description="Stream one signal's events as they happen: a table, or JSON lines with --json.",
    )
    targets = parser.add_subparsers(dest="target", metavar="SIGNAL", required=True)
    for target in load_targets():
        sub = targets.add_parser(
            target.name, help=target.help, description=target.description,
            epilog=("examples:\n" + "\n".join(f"  {e}" for e in target.examples)) if target.examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_arguments(sub)
        target.add_arguments(sub)
        sub.set_defaults(func=run, trace_target=target)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    parser.add_argument("--pid", type=int, action="append", default=None,
                        help="only this process id (repeatable)")
    parser.add_argument("--comm", action="append", default=None,
                        help="only processes with this command name (repeatable)")
    parser.add_argument("--min-latency", default=None, metavar="DUR",
                        help="only events at least this slow, e.g. 100ms, 1s")
    parser.add_argument("--duration", default=None, metavar="DUR",
                        help="stop after this long (default: until Ctrl-C)")


def build_filter(args: argparse.Namespace, target: TraceTarget):
    """The per-event predicate of the command line's filters, or None when there are none."""
    pids = set(args.pid or ())
    comms = set(args.comm or ())
    min_latency = parse_duration_ns(args.min_latency) if args.min_latency else None
    extra = target.make_filter(args) if target.make_filter else None
    if not (pids or comms or min_latency is not None or extra):
        return None

    def keep(event: dict) -> bool:
        if pids and event.get("pid") not in pids:
            return False
        if comms and event.get("comm") not in comms:
            return False
        if min_latency is not None and (event.get("latency_ns") or 0) < min_latency:
            return False
        return extra(event) if extra else True

    return keep


def run(args: argparse.Namespace) -> int:
    target: TraceTarget = args.trace_target
    duration_s = parse_duration_s(args.duration) if args.duration else None
    keep = build_filter(args, target)
    runner = Runner(target.make_sources(args))
    writer = EventWriter(json_lines=args.json, columns=target.columns)

    def on_events(events: list[dict]) -> None:
        writer.write_batch([event for event in events if keep(event)] if keep else events)
        if writer.broken:
            runner.stop.set()

    try:
        runner.run(on_events, duration_s=duration_s)
    finally:
        writer.close()
    for name, counters in runner.stats().items():
        if counters:
            status(f"dnstrace: {name}: " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    return 0
