"""The findings engine: keeps the last minute of events and runs every rule over it.

``FindingsEngine`` is a pipeline ``Stage``: it keeps the recent events the rules need (per
kind, bounded, the bound shared fairly between processes so that one flooding process
cannot evict another's evidence, drops counted), ``evaluate(now_ns)`` runs every rule of
``registry.RULES`` over that ``Window``, and ``tick()`` returns the finding events that are
new (or due again) so the pipeline hands them to every sink (shipper, metrics); sinks with
``set_findings`` (metrics) also get the active set after each evaluation.

``evaluate(events)`` does the same for a recorded stream (``dnstrace findings --from``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from dnstrace.bounded import FairBuffer
from dnstrace.findings.model import SEVERITY_ORDER, Event, Finding
from dnstrace.findings.registry import RULES
from dnstrace.findings.window import WINDOW_NS, EventsByPid, Window
from dnstrace.flow import Sink, Stage

MAX_EVENTS_PER_KIND = 20_000  # shared fairly between processes (see bounded.FairBuffer)
# Fields no rule reads that hold lists/dicts of their own: left out of buffered events (memory).
UNUSED_FIELDS = frozenset(("answers", "pair_of", "fallback_of"))
REEMIT_NS = 60 * 1_000_000_000  # an active finding is shipped again at most this often
REEMIT_CHANGED_NS = 5 * 1_000_000_000  # ... or this often when the processes it names change
MAX_PENDING = 1000  # finding events waiting for ``take_new()``; more are dropped (counted)
MAX_IDENTITIES = 10_000  # (rule, key) pairs remembered for first_seen/re-emission before pruning


def evaluate(events: Iterable[Event], now_ns: int | None = None, window_ns: int = WINDOW_NS,
             gai_traced: bool | None = None) -> list[Finding]:
    """Run every rule over a recorded stream (the last ``window_ns`` before ``now_ns``)."""
    events = list(events)
    if now_ns is None:
        now_ns = max((e.get("ts") or 0 for e in events), default=0)
    by_kind: defaultdict[Any, list[Event]] = defaultdict(list)  # a recorded line may lack its kind
    for e in events:
        if not e.get("ts") or e["ts"] > now_ns - window_ns:
            by_kind[e.get("kind")].append(e)
    return run_rules(Window(by_kind, now_ns, window_ns, gai_traced))


def run_rules(window: Window) -> list[Finding]:
    """Every rule's findings, most severe first (then by rule id and key)."""
    findings: list[Finding] = []
    for rule in RULES:
        found = rule.check(window)
        for finding in found:
            if finding.rule not in rule.reports:
                raise ValueError(f"{rule.check.__name__} made a {finding.rule!r} finding, which its Rule does "
                                 f"not declare ({', '.join(rule.ids)})")
        findings.extend(found)
    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.rule, f.key))
    return findings


class FindingsEngine(Stage):
    """Keeps the last minute of events (bounded per kind) and evaluates the rules every tick."""

    name = "findings"
    KINDS = ("gai", "dns", "lookup", "syn_retry", "connect", "drop", "conntrack", "agent")

    def __init__(self, window_ns: int = WINDOW_NS, max_events_per_kind: int = MAX_EVENTS_PER_KIND,
                 host: str = "", gai_traced: bool | None = None,
                 on_finding: Callable[[Event], None] | None = None):
        self.window_ns = window_ns
        self.host = host
        self.gai_traced = gai_traced
        self.on_finding = on_finding
        # kind -> that kind's events by pid
        self.events: dict[str, FairBuffer[Any, Event]] = {k: FairBuffer(max_events_per_kind) for k in self.KINDS}
        self.active: list[Finding] = []
        self.first_seen: dict[tuple[str, str], int] = {}
        self._emitted_at: dict[tuple[str, str], int] = {}
        self._emitted_pids: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.pending: list[Event] = []  # finding events not yet taken by ``take_new()``
        self.now_ns = 0
        self.counters = {"events": 0, "evicted_over_bound": 0, "evaluations": 0, "evaluations_deferred": 0,
                         "findings_emitted": 0, "pending_dropped": 0, "listener_errors": 0}
        self.listeners: list[Callable[[list[Event]], None]] = []  # get the active findings after each evaluation
        self._last_cost_s = 0.0
        self._last_eval_monotonic = -1e9

    def handle(self, events: list[Event]) -> None:
        buffers: dict[Any, FairBuffer[Any, Event]] = self.events  # an event may lack its kind
        unused = UNUSED_FIELDS
        for e in events:
            buffer = buffers.get(e.get("kind"))
            if buffer is None:
                continue
            if unused.isdisjoint(e):
                buffer.append(e.get("pid") or 0, e)
            else:  # keep a slim copy: the answers, partner and fallback records are not read by any rule
                slim = e.copy()
                for name in unused.intersection(e):
                    del slim[name]
                buffer.append(e.get("pid") or 0, slim)
            self.counters["events"] += 1
            ts = e.get("ts") or 0
            if ts > self.now_ns:
                self.now_ns = ts

    def bind(self, sinks: list[Sink]) -> None:
        """Sinks that show the active set (``set_findings``: metrics) listen to every evaluation."""
        for sink in sinks:
            set_findings = getattr(sink, "set_findings", None)
            if callable(set_findings):
                self.listeners.append(set_findings)

    def tick(self, now_ns: int) -> list[Event]:
        """Evaluate (when due); return the finding events not yet handed out."""
        self._tick_evaluate(now_ns)
        return self.take_new()

    def flush(self) -> list[Event]:
        return self.take_new()

    def _tick_evaluate(self, now_ns: int) -> None:
        # Evaluation cost grows with the window's events: keep it under ~10 % of one core by
        # evaluating less often when it is expensive (every 1 s when cheap, at most every 10 s).
        interval_s = min(10.0, max(1.0, self._last_cost_s * 10))
        if time.monotonic() - self._last_eval_monotonic < interval_s - 0.05:
            self.counters["evaluations_deferred"] += 1
            return
        started = time.process_time()
        self.evaluate(now_ns)
        self._last_cost_s = time.process_time() - started
        self._last_eval_monotonic = time.monotonic()

    def evaluate(self, now_ns: int | None = None) -> list[Finding]:
        now_ns = max(now_ns or 0, self.now_ns)
        horizon = now_ns - self.window_ns

        def is_old(event: Event) -> bool:
            return bool((event.get("ts") or horizon + 1) <= horizon)  # events without a time stay

        by_kind: dict[str, list[Event]] = {}
        by_pid: dict[str, EventsByPid] = {}
        for kind, buffer in self.events.items():
            buffer.expire(is_old)
            by_kind[kind] = buffer.items()
            by_pid[kind] = buffer.by_owner
        self.active = run_rules(Window(by_kind, now_ns, self.window_ns, self.gai_traced, by_pid=by_pid))
        self.counters["evaluations"] += 1
        for finding in self.active:
            ident = (finding.rule, finding.key)
            self.first_seen.setdefault(ident, now_ns)
            since = now_ns - self._emitted_at.get(ident, -REEMIT_NS)
            # again after a minute, or sooner (5 s) when the processes it names changed
            changed = self._emitted_pids.get(ident) != tuple(finding.pids) and since >= REEMIT_CHANGED_NS
            if since >= REEMIT_NS or changed:
                self._emitted_at[ident] = now_ns
                self._emitted_pids[ident] = tuple(finding.pids)
                event = finding.event(now_ns, self.host)
                event["first_seen"] = self.first_seen[ident]
                self.counters["findings_emitted"] += 1
                if len(self.pending) < MAX_PENDING:
                    self.pending.append(event)
                else:
                    self.counters["pending_dropped"] += 1
                if self.on_finding:
                    self.on_finding(event)
        if len(self.first_seen) > MAX_IDENTITIES:  # bound: forget identities no longer active
            live = {(f.rule, f.key) for f in self.active}
            self.first_seen = {k: v for k, v in self.first_seen.items() if k in live}
            self._emitted_at = {k: v for k, v in self._emitted_at.items() if k in live}
            self._emitted_pids = {k: v for k, v in self._emitted_pids.items() if k in live}
        if self.listeners:
            current = self.current()
            for listener in self.listeners:
                try:
                    listener(current)
                except Exception:  # a broken listener must not stop the findings
                    self.counters["listener_errors"] += 1
        return self.active

    def take_new(self) -> list[Event]:
        pending, self.pending = self.pending, []
        return pending

    def current(self) -> list[Event]:
        return [f.event(self.now_ns, self.host) for f in self.active]

    def stats(self) -> dict[str, int]:
        return {**self.counters, "evicted_over_bound": sum(b.evicted for b in self.events.values()),
                "buffered": sum(len(b) for b in self.events.values()),
                "buffered_processes": sum(len(b.by_owner) for b in self.events.values()),
                "active": len(self.active)}
