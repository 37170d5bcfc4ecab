"""The signals dnstrace knows, one line each: ``dnstrace trace <name>`` and ``agent.signals`` read this list.

Each module named here defines ``SIGNAL = SignalSpec(...)`` (``signals/base.py``). They are
imported when first asked for, so commands that trace nothing stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from dnstrace.signals.base import SignalSpec

SIGNAL_MODULES = (
    "dnstrace.signals.gai.source",
    "dnstrace.signals.dns.spec",
    "dnstrace.signals.lookups.source",
    "dnstrace.signals.tcp.source",
    "dnstrace.signals.drops.source",
    "dnstrace.signals.conntrack.source",
)


def all_signals() -> dict[str, SignalSpec[Any]]:
    """Every signal by name, in the order of ``SIGNAL_MODULES``."""
    specs: list[SignalSpec[Any]] = [importlib.import_module(name).SIGNAL for name in SIGNAL_MODULES]
    return {spec.name: spec for spec in specs}
