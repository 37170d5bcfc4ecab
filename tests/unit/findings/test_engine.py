"""The findings engine's own mechanics, driven by small scripted rules: buffering and the window
horizon, re-emission timing, the pending bound, identity pruning, evaluation deferral,
listeners, sorting and its counters."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dnstrace.findings import engine as engine_module
from dnstrace.findings.engine import FindingsEngine, evaluate, run_rules
from dnstrace.findings.model import Finding, Rule

S = 1_000_000_000
T0 = 1_700_000_000 * S


def dns(t_ns, pid=10, **fields):
    return {"kind": "dns", "ts": t_ns, "pid": pid, "comm": "app", "server": "10.0.0.1", **fields}


class ServerRule:
    """One "test-server" finding per server among the window's dns events, naming their pids."""

    def __init__(self, severity="warning"):
        self.severity = severity
        self.windows = []

    def __call__(self, w):
        self.windows.append(w)
        pids: dict = {}
        for e in w.kind("dns"):
            pids.setdefault(e.get("server"), set()).add(e.get("pid"))
        return [Finding("test-server", self.severity, f"server {s}", {"n": len(p)}, "fix it", key=str(s),
                        pids=sorted(p, key=str), comms=["app"]) for s, p in sorted(pids.items(), key=str)]


class KeysRule:
    """A "test-key" finding for each key in ``keys`` (set by the test between evaluations)."""

    def __init__(self, keys=()):
        self.keys = list(keys)

    def __call__(self, w):
        return [Finding("test-key", "info", f"key {k}", {}, "", key=k, pids=[1]) for k in self.keys]


def use_rules(monkeypatch, *checks):
    rules = tuple(Rule(check, {rid: "a test rule" for rid in ids}) for check, ids in checks)
    monkeypatch.setattr(engine_module, "RULES", rules)


@pytest.fixture
def server_rule(monkeypatch):
    rule = ServerRule()
    use_rules(monkeypatch, (rule, ("test-server",)))
    return rule


# --- handle: what is buffered ----------------------------------------------------------------


def test_handle_buffers_known_kinds_by_pid_and_tracks_the_newest_time(server_rule):
    engine = FindingsEngine()
    plain = dns(T0 + 5 * S)
    no_pid = dns(T0 + 2 * S, pid=None)
    engine.handle([plain, no_pid, {"kind": "unknown", "ts": T0 + 9 * S}, {"ts": T0 + 9 * S, "pid": 3},
                   dns(T0 + S, pid=0)])
    buffer = engine.events["dns"]
    assert sorted(buffer.by_owner) == [0, 10]
    assert buffer.by_owner[10][0] is plain  # nothing to slim: the event itself
    assert list(buffer.by_owner[0]) == [no_pid, dns(T0 + S, pid=0)]
    assert engine.now_ns == T0 + 5 * S
    assert engine.counters["events"] == 3


def test_handle_keeps_slim_copies_of_events_with_fields_no_rule_reads(server_rule):
    engine = FindingsEngine()
    fat = dns(T0, answers=["1.2.3.4"], pair_of={"ts": 1}, fallback_of={"ts": 2}, qname="a")
    only_fallback = dns(T0, pid=None, fallback_of={"ts": 2})
    engine.handle([fat, only_fallback])
    assert list(engine.events["dns"].by_owner[10]) == [dns(T0, qname="a")]
    assert list(engine.events["dns"].by_owner[0]) == [dns(T0, pid=None)]
    assert "answers" in fat and "fallback_of" in only_fallback  # the caller's events are left as they were


def test_events_without_time_leave_the_clock_at_zero(server_rule):
    engine = FindingsEngine()
    engine.handle([dns(None), dns(0)])
    assert engine.now_ns == 0
    found = engine.evaluate()
    assert [f.key for f in found] == ["10.0.0.1"]
    (event,) = engine.take_new()
    assert event["ts"] == 0 and event["first_seen"] == 0


def test_default_bound_is_twenty_thousand_events_per_kind(server_rule):
    engine = FindingsEngine()
    engine.handle([dns(T0 + i, pid=1 + i % 7) for i in range(20_000)])
    assert engine.stats()["evicted_over_bound"] == 0 and engine.stats()["buffered"] == 20_000
    engine.handle([dns(T0 + 20_000)])
    assert engine.stats()["evicted_over_bound"] == 1 and engine.stats()["buffered"] == 20_000


# --- evaluate: the window ------------------------------------------------------------------------


def test_the_window_horizon_an_event_exactly_a_window_old_is_gone(server_rule):
    engine = FindingsEngine(window_ns=10 * S, gai_traced=True)
    old = dns(T0, server="old")
    kept = dns(T0 + 1, server="kept")
    timeless = dns(None, server="timeless")
    engine.handle([old, kept, timeless])
    found = engine.evaluate(T0 + 10 * S)
    assert [f.key for f in found] == ["kept", "timeless"]
    w = server_rule.windows[-1]
    assert w.now_ns == T0 + 10 * S and w.window_ns == 10 * S and w.gai_traced is True
    assert w.kind("dns") == [kept, timeless]
    assert dict(w.by_process("dns")) == {(10, "app"): engine.events["dns"].by_owner[10]}
    assert engine.stats()["buffered"] == 2


def test_evaluate_never_goes_back_before_the_newest_event(server_rule):
    engine = FindingsEngine(window_ns=10 * S)
    engine.handle([dns(T0 + 20 * S, server="new"), dns(T0 + 9 * S, pid=11, server="early")])
    assert [f.key for f in engine.evaluate(T0)] == ["new"]  # now is the newest event: T0 + 20 s
    assert server_rule.windows[-1].now_ns == T0 + 20 * S
    assert [f.key for f in engine.evaluate()] == ["new"]
    assert server_rule.windows[-1].now_ns == T0 + 20 * S


def test_gai_traced_defaults_to_whether_gai_events_are_in_the_window(server_rule):
    engine = FindingsEngine()
    engine.evaluate(T0)
    assert server_rule.windows[-1].gai_traced is False
    engine.handle([{"kind": "gai", "ts": T0, "pid": 3}])
    engine.evaluate(T0)
    assert server_rule.windows[-1].gai_traced is True


# --- re-emission ------------------------------------------------------------------------------------


def emitted(engine, now):
    engine.evaluate(now)
    return [(e["key"], e["pids"], e["first_seen"]) for e in engine.take_new()]


def test_a_finding_is_emitted_again_after_exactly_a_minute(server_rule):
    engine = FindingsEngine(window_ns=3600 * S)
    engine.handle([dns(T0)])
    assert emitted(engine, T0) == [("10.0.0.1", [10], T0)]
    assert emitted(engine, T0 + 5 * S) == []
    assert emitted(engine, T0 + 60 * S - 1) == []
    assert emitted(engine, T0 + 60 * S) == [("10.0.0.1", [10], T0)]
    assert emitted(engine, T0 + 120 * S - 1) == []
    assert emitted(engine, T0 + 120 * S) == [("10.0.0.1", [10], T0)]
    assert engine.counters["findings_emitted"] == 3


def test_a_finding_whose_processes_change_is_emitted_again_after_five_seconds(server_rule):
    engine = FindingsEngine(window_ns=3600 * S)
    engine.handle([dns(T0)])
    assert emitted(engine, T0) == [("10.0.0.1", [10], T0)]
    engine.handle([dns(T0 + S, pid=11)])
    assert emitted(engine, T0 + 5 * S - 1) == []
    assert emitted(engine, T0 + 5 * S) == [("10.0.0.1", [10, 11], T0)]
    # the same processes again: a minute from the last emission
    assert emitted(engine, T0 + 10 * S) == []
    assert emitted(engine, T0 + 65 * S - 1) == []
    assert emitted(engine, T0 + 65 * S) == [("10.0.0.1", [10, 11], T0)]


def test_the_first_evaluation_at_time_zero_emits(server_rule):
    engine = FindingsEngine()
    engine.handle([dns(None)])
    assert emitted(engine, 0) == [("10.0.0.1", [10], 0)]
    engine.handle([dns(None, pid=11)])
    assert emitted(engine, 0) == []  # changed, but not 5 s after the last emission


def test_finding_events_carry_host_first_seen_and_go_to_on_finding(server_rule):
    got = []
    engine = FindingsEngine(window_ns=3600 * S, host="node-1", on_finding=got.append)
    engine.handle([dns(T0, server="a")])
    engine.evaluate(T0 + S)
    engine.handle([dns(T0 + 2 * S, server="b")])
    engine.evaluate(T0 + 61 * S)
    assert [(e["key"], e["ts"], e["first_seen"], e["host"]) for e in got] == [
        ("a", T0 + S, T0 + S, "node-1"), ("a", T0 + 61 * S, T0 + S, "node-1"), ("b", T0 + 61 * S, T0 + 61 * S, "node-1")]
    assert [e["key"] for e in engine.flush()] == ["a", "a", "b"]
    assert engine.flush() == []


# --- bounds: pending and identities ---------------------------------------------------------------


def test_pending_holds_a_thousand_finding_events_and_counts_the_rest(monkeypatch):
    rule = KeysRule([f"k{i}" for i in range(1001)])
    use_rules(monkeypatch, (rule, ("test-key",)))
    got = []
    engine = FindingsEngine(on_finding=got.append)
    engine.evaluate(T0)
    assert len(engine.pending) == 1000 and len(got) == 1001
    assert engine.counters["pending_dropped"] == 1 and engine.counters["findings_emitted"] == 1001
    assert {e["key"] for e in engine.take_new()} == {f"k{i}" for i in range(1001)} - {"k999"}

    rule.keys = [f"j{i}" for i in range(1000)]
    engine = FindingsEngine()
    engine.evaluate(T0)
    assert len(engine.take_new()) == 1000 and engine.counters["pending_dropped"] == 0


def identities_run(monkeypatch, n):
    """``n`` identities at T0, one new one ("x") 1 s later, then "x" and the first again 5 s after that."""
    rule = KeysRule([f"k{i}" for i in range(n)])
    use_rules(monkeypatch, (rule, ("test-key",)))
    engine = FindingsEngine()
    engine.evaluate(T0)
    rule.keys = ["x"]
    engine.evaluate(T0 + S)
    engine.take_new()
    rule.keys = ["x", "k0"]
    engine.evaluate(T0 + 6 * S)
    return engine, [(e["key"], e["first_seen"]) for e in engine.take_new()]


def test_past_ten_thousand_identities_the_inactive_are_forgotten(monkeypatch):
    engine, again = identities_run(monkeypatch, 10_000)
    # 10,001 identities: all but "x" forgotten, so k0 is new again (and "x" is not due)
    assert again == [("k0", T0 + 6 * S)]
    assert engine.first_seen == {("test-key", "x"): T0 + S, ("test-key", "k0"): T0 + 6 * S}


def test_ten_thousand_identities_are_all_remembered(monkeypatch):
    engine, again = identities_run(monkeypatch, 9_999)
    assert again == []
    assert len(engine.first_seen) == 10_000 and engine.first_seen[("test-key", "k0")] == T0


# --- evaluation deferral --------------------------------------------------------------------------


class Clock:
    def __init__(self, costs):
        self.now = 0.0
        self.costs = list(costs)  # CPU seconds each evaluation takes
        self.cpu = 50.0
        self._started = False

    def monotonic(self):
        return self.now

    def process_time(self):
        if self._started:
            self.cpu += self.costs.pop(0)
        self._started = not self._started
        return self.cpu


def ticking(monkeypatch, costs):
    clock = Clock(costs)
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(monotonic=clock.monotonic,
                                                               process_time=clock.process_time))
    return clock


def ticks(engine, clock, times):
    """For each monotonic time, whether the tick evaluated."""
    out = []
    for t in times:
        clock.now = t
        before = engine.counters["evaluations"]
        engine.tick(T0)
        out.append(engine.counters["evaluations"] - before)
    return out


def test_cheap_evaluations_run_every_second(monkeypatch, server_rule):
    clock = ticking(monkeypatch, [0.0, 0.0, 0.0])
    engine = FindingsEngine()
    assert ticks(engine, clock, [0.0, 0.9375, 0.95, 1.875, 1.9]) == [1, 0, 1, 0, 1]
    assert engine.counters["evaluations_deferred"] == 2


def test_costly_evaluations_run_less_often(monkeypatch, server_rule):
    clock = ticking(monkeypatch, [0.25, 0.25, 0.25])
    engine = FindingsEngine()
    # 0.25 s of CPU: every 2.5 s (less a 50 ms tolerance)
    assert ticks(engine, clock, [0.0, 2.4375, 2.45, 4.875, 4.9]) == [1, 0, 1, 0, 1]


def test_evaluations_run_at_least_every_ten_seconds(monkeypatch, server_rule):
    clock = ticking(monkeypatch, [2.0, 2.0, 0.0, 0.0])
    engine = FindingsEngine()
    # 2 s of CPU would mean every 20 s: capped at 10 s; once cheap again, every second
    assert ticks(engine, clock, [0.0, 9.9375, 9.95, 19.875, 19.9, 20.8125, 20.875]) == [1, 0, 1, 0, 1, 0, 1]


def test_tick_returns_the_new_finding_events(monkeypatch, server_rule):
    clock = ticking(monkeypatch, [0.0, 0.0])
    engine = FindingsEngine()
    engine.handle([dns(T0)])
    assert [e["key"] for e in engine.tick(T0)] == ["10.0.0.1"]
    clock.now = 0.5
    engine.handle([dns(T0 + S, server="b")])
    assert engine.tick(T0 + S) == []  # deferred
    clock.now = 1.0
    assert [e["key"] for e in engine.tick(T0 + S)] == ["b"]


# --- listeners ----------------------------------------------------------------------------------------


class MetricsSink:
    def __init__(self):
        self.seen = []

    def set_findings(self, findings):
        self.seen.append([(f["rule"], f["key"], f["host"]) for f in findings])


class BrokenSink:
    def set_findings(self, findings):
        raise RuntimeError("broken")


def test_sinks_with_set_findings_get_the_active_set_and_a_broken_one_is_counted(server_rule):
    engine = FindingsEngine(window_ns=3600 * S, host="h")
    first, second = MetricsSink(), MetricsSink()
    engine.bind([BrokenSink(), first, SimpleNamespace(set_findings="not callable"), object(), second])
    assert len(engine.listeners) == 3
    engine.evaluate(T0)
    engine.handle([dns(T0)])
    engine.evaluate(T0)
    assert first.seen == second.seen == [[], [("test-server", "10.0.0.1", "h")]]
    assert engine.counters["listener_errors"] == 2


def test_current_lists_the_active_findings_stamped_at_the_newest_events_time(monkeypatch):
    use_rules(monkeypatch, (KeysRule(["b", "a"]), ("test-key",)))
    engine = FindingsEngine(host="h")
    assert engine.now_ns == 0 and engine.current() == []
    engine.evaluate(T0)
    assert [(e["key"], e["ts"], e["host"]) for e in engine.current()] == [("a", 0, "h"), ("b", 0, "h")]
    engine.handle([dns(T0 + 7 * S)])
    assert [(e["key"], e["ts"]) for e in engine.current()] == [("a", T0 + 7 * S), ("b", T0 + 7 * S)]


# --- sorting and rule ids -----------------------------------------------------------------------------


def test_findings_sort_by_severity_then_rule_then_key_unknown_severity_last(monkeypatch):
    def many(w):
        return [Finding(rule, sev, "", {}, "", key=key) for rule, sev, key in (
            ("r-b", "info", "1"), ("r-a", "odd", "1"), ("r-b", "critical", "2"), ("r-b", "critical", "1"),
            ("r-a", "critical", "9"), ("r-a", "warning", "1"), ("r-a", "info", "1"))]

    use_rules(monkeypatch, (many, ("r-a", "r-b")))
    found = run_rules(None)  # type: ignore[arg-type]
    assert [(f.severity, f.rule, f.key) for f in found] == [
        ("critical", "r-a", "9"), ("critical", "r-b", "1"), ("critical", "r-b", "2"), ("warning", "r-a", "1"),
        ("info", "r-a", "1"), ("info", "r-b", "1"), ("odd", "r-a", "1")]


def test_a_finding_its_rule_does_not_declare_is_an_error(monkeypatch):
    def sneaky(w):
        return [Finding("undeclared", "info", "", {}, "")]

    use_rules(monkeypatch, (sneaky, ("declared-a", "declared-b")))
    with pytest.raises(ValueError, match=r"^sneaky made a 'undeclared' finding, which its Rule does not declare "
                                         r"\(declared-a, declared-b\)$"):
        evaluate([])


# --- recorded streams ---------------------------------------------------------------------------------


def test_evaluate_a_recorded_stream_ends_at_its_newest_event(server_rule):
    stream = [dns(T0, server="old"), dns(T0 + 1, server="edge"), dns(None, server="timeless"),
              {"ts": T0 + 30 * S, "server": "kindless"}, dns(T0 + 60 * S, server="new")]
    found = evaluate(stream)
    assert [f.key for f in found] == ["edge", "new", "timeless"]
    w = server_rule.windows[-1]
    assert w.now_ns == T0 + 60 * S and w.window_ns == 60 * S and w.gai_traced is False
    assert w.kind(None) == [stream[3]]  # type: ignore[arg-type]


def test_evaluate_a_recorded_stream_with_its_own_window_and_end(server_rule):
    stream = [dns(T0, server="a"), dns(T0 + 10 * S, server="b"), dns(T0 + 30 * S, server="c")]
    assert [f.key for f in evaluate(stream, now_ns=T0 + 20 * S, window_ns=10 * S, gai_traced=True)] == ["c"]
    assert server_rule.windows[-1].gai_traced is True
    assert [f.key for f in evaluate(stream, now_ns=T0 + 20 * S, window_ns=10 * S + 1)] == ["b", "c"]
    assert evaluate([]) == [] and server_rule.windows[-1].now_ns == 0
    assert [f.key for f in evaluate([dns(None)])] == ["10.0.0.1"]
    assert server_rule.windows[-1].now_ns == 0


# --- counters and stats ---------------------------------------------------------------------------------


def test_counters_and_stats_after_a_scripted_sequence(monkeypatch, server_rule):
    clock = ticking(monkeypatch, [0.0, 0.0, 0.0])
    engine = FindingsEngine(max_events_per_kind=3)
    engine.bind([BrokenSink()])
    engine.handle([dns(T0 + i * S, pid=10 + i % 2) for i in range(5)] + [{"kind": "gai", "ts": T0, "pid": 7}])
    engine.tick(T0 + 5 * S)  # evaluates: one finding
    clock.now = 0.5
    engine.tick(T0 + 5 * S)  # deferred
    clock.now = 1.0
    engine.handle([dns(T0 + 6 * S, server="b", pid=12)])
    engine.tick(T0 + 6 * S)  # evaluates: "b" is new
    assert engine.counters == {"events": 7, "evicted_over_bound": 0, "evaluations": 2, "evaluations_deferred": 1,
                               "findings_emitted": 2, "pending_dropped": 0, "listener_errors": 2}
    assert engine.stats() == {"events": 7, "evicted_over_bound": 3, "evaluations": 2, "evaluations_deferred": 1,
                              "findings_emitted": 2, "pending_dropped": 0, "listener_errors": 2,
                              "buffered": 4, "buffered_processes": 4, "active": 2}
