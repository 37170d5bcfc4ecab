"""What a signal module declares so ``dnstrace trace <name>`` can stream its events.

Each signal module (gai, dnswire, lookups, tcp, drops, conntrack) defines one
``TRACE = TraceTarget(...)``; ``trace_cmd`` builds the subcommands from them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dnstrace.columns import Column
from dnstrace.errors import DnstraceError
from dnstrace.flow import Source
from dnstrace.units import parse_duration_ns


def duration_ns_arg(text: str) -> int:
    """argparse ``type=`` for durations ("1s", "500ms"): nanoseconds, like the config's duration keys."""
    try:
        return parse_duration_ns(text)
    except DnstraceError as err:
        raise argparse.ArgumentTypeError(err.message) from None


@dataclass(frozen=True)
class TraceTarget:
    name: str  # subcommand: dnstrace trace <name>
    help: str  # one line for --help
    description: str  # what it shows and how it is captured, for `trace <name> --help`
    columns: tuple[Column, ...]  # table layout (JSON output carries every field)
    make_sources: Callable[[argparse.Namespace], list[Source]]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # Extra per-event filter built from the parsed args (pid/comm/min-latency are generic).
    make_filter: Callable[[argparse.Namespace], Callable[[dict], bool]] | None = None
    examples: tuple[str, ...] = field(default_factory=tuple)
    # When the agent (not `dnstrace trace`) starts this signal: which config key sets which option
    # (argparse dest of ``add_arguments``). Values are already parsed by the config's key table, in the
    # option's own unit. Options not listed keep their flag defaults.
    config_options: Mapping[str, str] = field(default_factory=dict)
