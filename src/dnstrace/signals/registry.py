"""The signals dnstrace knows, one line each: ``dnstrace trace <name>`` and ``agent.signals`` read this list.

Each module named here defines ``SIGNAL = SignalSpec(...)`` (``signals/base.py``). They are
imported when first asked for, so commands that trace nothing stay light.

Adding a signal ``x`` touches its folder and one line below: ``signals/x/`` with ``x.bpf.c``
and ``x.h`` (its structs and counters), ``source.py`` (its Source: a
``kernel.ringsource.BpfRingSource`` with ``program``, ``defines``, ``attach``, ``poll``,
``live_stats``), ``abi.py`` (``HEADER_ABI``: what Python decodes from ``x.h``, which the ABI
test holds against the header) and ``spec.py`` (its Options dataclass, columns and ``SIGNAL``).
``dnstrace trace x`` and ``agent.signals = x`` then work.
"""

from __future__ import annotations

import importlib
from typing import Any

from dnstrace.signals.base import SignalSpec

SIGNAL_MODULES = (
    "dnstrace.signals.gai.spec",
    "dnstrace.signals.dns.spec",
    "dnstrace.signals.lookups.spec",
    "dnstrace.signals.tcp.spec",
    "dnstrace.signals.drops.spec",
    "dnstrace.signals.conntrack.spec",
)


def all_signals() -> dict[str, SignalSpec[Any]]:
    """Every signal by name, in the order of ``SIGNAL_MODULES``."""
    specs: list[SignalSpec[Any]] = [importlib.import_module(name).SIGNAL for name in SIGNAL_MODULES]
    return {spec.name: spec for spec in specs}
