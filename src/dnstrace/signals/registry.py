"""The signals dnstrace knows, one line each: ``dnstrace trace <name>`` and ``agent.signals`` read this list.

Each module named here defines ``SIGNAL = SignalSpec(...)`` (``signals/base.py``). They are
imported when first asked for, so commands that trace nothing stay light.

Adding a signal ``x``: a folder ``signals/x/`` with ``x.bpf.c`` and ``x.h`` (its structs and
counters), ``source.py`` with its Source (a ``kernel.ringsource.BpfRingSource``: ``program``,
``defines``, ``attach``, ``poll``, ``live_stats``), its Options dataclass and ``SIGNAL``; one line
below. ``dnstrace trace x`` and ``agent.signals = x`` then work; its header's layouts are
declared in ``tests/unit/kernel/test_abi.py``.
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
