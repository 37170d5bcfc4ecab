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
import dataclasses
from collections.abc import Callable
from typing import Any

from dnstrace.cli.output import EventWriter
from dnstrace.errors import DnstraceError
from dnstrace.log import status
from dnstrace.pipeline.loop import Runner
from dnstrace.signals.base import Event, EventFilter, SignalSpec, flag_of
from dnstrace.signals.registry import all_signals
from dnstrace.units import parse_duration_ns, parse_duration_s

# trace's common flags that also set an Options field, when the signal's Options has it
# (gai filters processes and latency in the kernel already).
COMMON_OPTION_FIELDS = {"pid": "pids", "min_latency": "min_latency_ns"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", help="stream one signal's events (gai, dns, lookups, tcp, drops, conntrack)",
        description="Stream one signal's events as they happen: a table, or JSON lines with --json.",
    )
    targets = parser.add_subparsers(dest="target", metavar="SIGNAL", required=True)
    for spec in all_signals().values():
        sub = targets.add_parser(
            spec.name, help=spec.help, description=spec.description,
            epilog=("examples:\n" + "\n".join(f"  {e}" for e in spec.examples)) if spec.examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_arguments(sub)
        add_option_flags(sub, spec.options)
        sub.set_defaults(func=run, signal=spec)


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


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse ``type=`` from a Flag's parser: its DnstraceError becomes argparse's usage error."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except DnstraceError as err:
            raise argparse.ArgumentTypeError(err.message) from None

    convert.__name__ = getattr(parse, "__name__", "value")  # a ValueError reads "invalid int value: 'x'"
    return convert


def add_option_flags(parser: argparse.ArgumentParser, options: type) -> None:
    """One flag per Options field that declares a ``Flag``; its dest is the field's name."""
    for options_field in dataclasses.fields(options):
        flag = flag_of(options_field)
        if flag is None:
            continue
        kwargs: dict[str, Any] = {"dest": options_field.name, "help": flag.help, "default": None}
        if isinstance(options_field.default, bool):
            kwargs["action"] = "store_false" if options_field.default else "store_true"
            kwargs["default"] = options_field.default
        else:
            if flag.choices:
                kwargs["choices"] = flag.choices  # shown as {a,b,...} unless a metavar is given
            if flag.metavar or not flag.choices:
                kwargs["metavar"] = flag.metavar or flag.name.lstrip("-").upper().replace("-", "_")
            if flag.parse is not None:
                kwargs["type"] = argument_type(flag.parse)
            if flag.repeat:
                kwargs["action"] = "append"
        parser.add_argument(flag.name, **kwargs)


def options_from_args(spec: SignalSpec[Any], args: argparse.Namespace) -> Any:
    """The signal's Options from the parsed command line: flags given, then the common ones it uses."""
    values: dict[str, Any] = {}
    for options_field in dataclasses.fields(spec.options):
        name = options_field.name
        if flag_of(options_field) is not None:
            value = getattr(args, name, None)
        elif name == COMMON_OPTION_FIELDS["pid"]:
            value = args.pid
        elif name == COMMON_OPTION_FIELDS["min_latency"]:
            value = parse_duration_ns(args.min_latency) if args.min_latency else None
        else:
            continue  # set from the config only
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    return spec.options(**values)


def build_filter(args: argparse.Namespace, spec: SignalSpec[Any]) -> EventFilter | None:
    """The per-event predicate of the command line's filters, or None when there are none."""
    pids = set(args.pid or ())
    comms = set(args.comm or ())
    min_latency = parse_duration_ns(args.min_latency) if args.min_latency else None
    extra = spec.event_filter(options_from_args(spec, args))
    if not (pids or comms or min_latency is not None or extra):
        return None

    def keep(event: Event) -> bool:
        if pids and event.get("pid") not in pids:
            return False
        if comms and event.get("comm") not in comms:
            return False
        if min_latency is not None and (event.get("latency_ns") or 0) < min_latency:
            return False
        return extra(event) if extra else True

    return keep


def run(args: argparse.Namespace) -> int:
    spec: SignalSpec[Any] = args.signal
    duration_s = parse_duration_s(args.duration) if args.duration else None
    keep = build_filter(args, spec)
    runner = Runner(spec.make_sources(options_from_args(spec, args)))
    writer = EventWriter(json_lines=args.json, columns=spec.columns)

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
