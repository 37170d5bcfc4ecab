"""What a signal module declares so ``dnstrace trace <name>`` can stream its events.

Each signal module (gai, dnswire, lookups, tcp, drops, conntrack) defines one
``TRACE = TraceTarget(...)``; ``trace_cmd`` builds the subcommands from them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Callable

from dnstrace.agent.runtime import Source
from dnstrace.output import Column


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
