"""The agent pipeline with fake signals and sinks: events flow through, failures stay contained."""

import os
import threading
from dataclasses import dataclass

import pytest
import structlog.testing

from dnstrace.config import load
from dnstrace.errors import EnvironmentProblem, UsageError
from dnstrace.flow import Sink, Source
from dnstrace.pipeline import runner as pipeline_mod
from dnstrace.pipeline.runner import Pipeline
from dnstrace.signals.base import SignalSpec


class PipeSource(Source):
    """One event per byte written to a pipe (epoll wakes like on a ring buffer)."""

    def __init__(self, name):
        self.name = name
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.started = False
        self.closed = 0

    def start(self):
        self.started = True

    def fds(self):
        return [self.read_fd]

    def poll(self):
        if self.closed:
            return []
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return []
        return [{"kind": "test", "source": self.name, "n": b} for b in data]

    def stats(self):
        return {"lost": 0}

    def close(self):
        if not self.closed:
            os.close(self.read_fd)
            os.close(self.write_fd)
        self.closed += 1


class BrokenSource(Source):
    name = "broken"

    def __init__(self, exc):
        self.exc = exc
        self.closed = 0

    def start(self):
        raise self.exc

    def close(self):
        self.closed += 1


class RecordingSink(Sink):
    def __init__(self, name="recording", fail=False):
        self.name = name
        self.events = []
        self.ticks = 0
        self.closed = 0
        self.fail = fail

    def handle(self, events):
        if self.fail:
            raise RuntimeError("sink broken")
        self.events.extend(events)

    def tick(self, now_ns):
        self.ticks += 1

    def stats(self):
        return {"seen": len(self.events)}

    def close(self):
        self.closed += 1


@dataclass(frozen=True)
class FakeOptions:
    dns_ports: tuple[int, ...] = (53,)
    libc_rescan_interval_ns: int = 1  # no config_options entry: must keep this default


@pytest.fixture
def fake_signals(monkeypatch):
    """Replaces the real signals with fakes; returns the sources each signal made and the Options it got."""
    made: dict[str, list] = {}
    options_seen = {}

    def target(name, factory):
        def make_sources(options):
            options_seen[name] = options
            sources = factory()
            made[name] = sources
            return sources
        return SignalSpec(name=name, help="", description="", columns=(), options=FakeOptions,
                          make_sources=make_sources, config_options={"agent.dns_ports": "dns_ports"})

    targets = {
        "good": target("good", lambda: [PipeSource("good-a"), PipeSource("good-b")]),
        "other": target("other", lambda: [PipeSource("other")]),
        "nokernel": target("nokernel", lambda: [BrokenSource(EnvironmentProblem("no such tracepoint"))]),
        "buggy": target("buggy", lambda: [BrokenSource(RuntimeError("bug"))]),
    }
    monkeypatch.setattr(pipeline_mod, "available_targets", lambda: targets)
    monkeypatch.setattr(pipeline_mod, "known_signal_names", lambda: set(targets))
    monkeypatch.setattr(pipeline_mod, "SINK_MODULES", ())
    return made, options_seen


def config(**values):
    return load(path=os.devnull, environ={}, flags=values)


def run_in_thread(pipe, **kwargs):
    errors = []

    def body():
        try:
            pipe.run(**kwargs)
        except Exception as err:  # surfaced to the test
            errors.append(err)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


def wait_until(predicate, timeout_s=5.0):
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return True
        threading.Event().wait(0.05)
    return predicate()


def test_events_reach_sinks_and_everything_closes(fake_signals):
    made, options_seen = fake_signals
    sink = RecordingSink()
    pipe = Pipeline(config(**{"agent.dns_ports": "53,8600"}), extra_sinks=[sink], signals=["good", "other"])
    thread, errors = run_in_thread(pipe)
    assert pipe.ready.wait(10)
    os.write(made["good"][0].write_fd, b"\x01\x02")
    os.write(made["other"][0].write_fd, b"\x03")
    wait_until(lambda: len(sink.events) >= 3 and sink.ticks >= 1)
    pipe.stop()
    thread.join(10)
    assert not thread.is_alive() and not errors
    assert sorted(e["n"] for e in sink.events) == [1, 2, 3]
    assert sink.ticks >= 1 and sink.closed == 1
    assert all(s.closed == 1 for sources in made.values() for s in sources)
    # The agent sets the Options fields a signal maps (config_options) from the config; the others keep defaults.
    options = options_seen["good"]
    assert options == FakeOptions(dns_ports=(53, 8600), libc_rescan_interval_ns=1)
    stats = pipe.stats()
    assert stats["pipeline"]["events"] == 3
    assert stats["sinks"]["recording"] == {"seen": 3}
    assert set(stats["sources"]) == {"good-a", "good-b", "other"}
    assert stats["signals"]["attached"] == ["good", "other"]


def test_signal_that_cannot_start_is_skipped(fake_signals, capsys):
    made, _ = fake_signals
    sink = RecordingSink()
    pipe = Pipeline(config(), extra_sinks=[sink], signals=["nokernel", "good", "buggy"])
    with structlog.testing.capture_logs() as logs:
        thread, errors = run_in_thread(pipe, duration_s=0.3)
        thread.join(10)
    assert not errors
    assert pipe.stats()["signals"] == {
        "attached": ["good"],
        "failed": {"nokernel": "no such tracepoint", "buggy": "RuntimeError: bug"},
    }
    assert made["nokernel"][0].closed >= 1  # a failed start is still cleaned up
    err = capsys.readouterr().err
    assert "dnstrace: attached (good; not started: nokernel, buggy)" in err
    assert {(entry.get("signal"), entry.get("reason") or entry.get("error")) for entry in logs
            if "start" in entry["event"]} == {("nokernel", "no such tracepoint"), ("buggy", "RuntimeError: bug")}
    assert sink.closed == 1


def test_no_signal_can_start_is_a_clear_error(fake_signals):
    sink = RecordingSink()
    pipe = Pipeline(config(), extra_sinks=[sink], signals=["nokernel", "buggy"])
    with pytest.raises(EnvironmentProblem, match="no signal could start.*nokernel: no such tracepoint"):
        pipe.run(duration_s=0.2)
    assert sink.closed == 1  # sinks are closed (spool flushed) even then
    assert not pipe.ready.is_set()


def test_failing_sink_does_not_starve_the_others(fake_signals):
    made, _ = fake_signals
    broken, good = RecordingSink("broken", fail=True), RecordingSink("good")
    pipe = Pipeline(config(), extra_sinks=[broken, good], signals=["good"])
    thread, errors = run_in_thread(pipe)
    assert pipe.ready.wait(10)
    os.write(made["good"][1].write_fd, b"\x07")
    wait_until(lambda: good.events)
    pipe.stop()
    thread.join(10)
    assert [e["n"] for e in good.events] == [7]
    assert pipe.stats()["pipeline"]["sink_errors"] == 1  # one batch, one failing handle()
    assert broken.closed == good.closed == 1


def test_unknown_signal_names_the_key(fake_signals):
    with pytest.raises(UsageError, match=r"agent.signals: unknown signal 'nope'"):
        Pipeline(config(), signals=["good", "nope"])


def test_signals_come_from_config(fake_signals):
    pipe = Pipeline(config(**{"agent.signals": "other,good,other"}))
    assert pipe.signals == ["other", "good"]


def test_enricher_is_applied(fake_signals, monkeypatch, tmp_path):
    made, _ = fake_signals
    module = tmp_path / "fake_enrich_for_pipeline_test.py"
    module.write_text(
        "class Enricher:\n"
        "    def __init__(self, config):\n"
        "        self.host = config['agent.host_id']\n"
        "    def enrich(self, events):\n"
        "        return [dict(e, host=self.host) for e in events]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pipeline_mod, "ENRICH_MODULE", "fake_enrich_for_pipeline_test")
    sink = RecordingSink()
    pipe = Pipeline(config(**{"agent.host_id": "node-7"}), extra_sinks=[sink], signals=["other"])
    thread, _ = run_in_thread(pipe)
    assert pipe.ready.wait(10)
    os.write(made["other"][0].write_fd, b"\x01")
    wait_until(lambda: sink.events)
    pipe.stop()
    thread.join(10)
    assert sink.events and sink.events[0]["host"] == "node-7"


class DerivingStage(RecordingSink):
    """A stage: each tick turns what it saw into one derived event."""

    def __init__(self):
        super().__init__("deriving")
        self.bound = None

    def bind(self, sinks):
        self.bound = [s.name for s in sinks]

    def tick(self, now_ns):
        self.ticks += 1
        if not self.events:
            return []
        seen, self.events = len(self.events), []
        return [{"kind": "derived", "seen": seen}]


def test_stage_sees_events_first_and_its_derived_events_reach_every_sink(fake_signals):
    made, _ = fake_signals
    stage, sink = DerivingStage(), RecordingSink()
    pipe = Pipeline(config(), extra_sinks=[sink], signals=["other"], stages=[stage])
    thread, errors = run_in_thread(pipe)
    assert pipe.ready.wait(10)
    assert stage.bound == ["recording"]
    os.write(made["other"][0].write_fd, b"\x01\x02")
    assert wait_until(lambda: any(e["kind"] == "derived" for e in sink.events))
    pipe.stop()
    thread.join(10)
    assert not errors
    derived = [e for e in sink.events if e["kind"] == "derived"]
    assert sum(e["seen"] for e in derived) == 2
    assert [e["n"] for e in sink.events if e["kind"] == "test"] == [1, 2]
    assert stage.closed == 1 and sink.closed == 1
    stats = pipe.stats()
    assert stats["pipeline"]["derived_events"] == len(derived)
    assert "deriving" in stats["sinks"]


def test_sink_modules_choose_the_default_sinks(fake_signals):
    import socket

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pipe = Pipeline(config(**{"agent.metrics_addr": f"127.0.0.1:{port}"}), signals=["good"],
                    sink_modules=(pipeline_mod.METRICS_MODULE,))
    sinks = pipe.make_sinks()
    try:
        assert [s.name for s in sinks] == ["metrics"]
    finally:
        for s in sinks:
            s.close()
    assert Pipeline(config(), signals=["good"], sink_modules=()).make_sinks() == []


def test_findings_engine_as_stage_ships_findings_and_feeds_metrics(fake_signals):
    """The agent's wiring: findings are derived events for every sink, and the active set reaches metrics."""
    from dnstrace.findings.engine import FindingsEngine
    from dnstrace.sinks.metrics import MetricsSink

    S = 1_000_000_000
    now = 1_700_000_000 * S
    resolv = {"nameservers": ["10.100.0.9", "10.100.0.2"], "search": [], "resolv_options": []}
    stream = []
    for i in range(6):
        common = {"ts": now - (40 - i * 6) * S, "pid": 4711, "tid": 4711, "comm": "kafka-writer", "container": "",
                  "pod": "", "namespace": "", **resolv}
        stream.append({**common, "kind": "dns", "qname": "kafka.service", "qtype": "A", "server": "10.100.0.9",
                       "answered": False, "sport": 40000 + i, "id": i})
        stream.append({**common, "kind": "dns", "qname": "kafka.service", "qtype": "A", "server": "10.100.0.2",
                       "answered": True, "rcode": "NOERROR", "latency_ns": 2_000_000, "sport": 41000 + i, "id": i})
    engine, metrics, shipped = FindingsEngine(host="n1"), MetricsSink(), RecordingSink("shipper")
    pipe = Pipeline(config(), extra_sinks=[metrics, shipped], signals=["other"], stages=[engine])
    pipe.sinks = [metrics, shipped]
    engine.bind(pipe.sinks)
    pipe._on_events(stream)
    pipe._on_tick(now)
    findings = [e for e in shipped.events if e["kind"] == "finding"]
    assert [f["rule"] for f in findings] == ["dead-nameserver"] and findings[0]["host"] == "n1"
    assert metrics.registry.get_sample_value(
        "dnstrace_findings_active", {"rule": "dead-nameserver", "severity": findings[0]["severity"]}) == 1
    assert metrics.registry.get_sample_value("dnstrace_events_total", {"kind": "finding"}) == 1
    pipe._on_tick(now + S)  # not due again: nothing new shipped
    assert len([e for e in shipped.events if e["kind"] == "finding"]) == 1


class LossySource(Source):
    """A source whose stats count lost records, like the dns source's ring buffer."""

    def __init__(self, name="dns"):
        self.name = name
        self.counters = {"ringbuf_lost": 0, "pairs_lost": 0, "events": 0, "malformed": 0,
                         "kernel_inflight_evicted": 0}

    def stats(self):
        return dict(self.counters, servers={"10.0.0.2:53": {"answered": 1}})


def test_loss_monitor_emits_deltas_of_loss_counters_only():
    from dnstrace.pipeline.losses import LossMonitor

    dns, lookups, quiet = LossySource("dns"), LossySource("lookups"), LossySource("tcp")
    lookups.counters = {"dns_ringbuf_lost": 0, "gai_ringbuf_full": 0, "gai_events": 0}
    monitor = LossMonitor(host="n1")
    assert monitor.check([dns, lookups, quiet], 1) == []
    dns.counters.update(ringbuf_lost=40, pairs_lost=2, events=1000, malformed=7, kernel_inflight_evicted=9)
    lookups.counters.update(dns_ringbuf_lost=5, gai_ringbuf_full=3, gai_events=99)
    events = {e["source"]: e for e in monitor.check([dns, lookups, quiet], 2)}
    assert set(events) == {"dns", "lookups"}
    assert events["dns"]["kind"] == "agent" and events["dns"]["ts"] == 2 and events["dns"]["host"] == "n1"
    assert events["dns"]["losses"] == {"ringbuf_lost": 40, "pairs_lost": 2} and events["dns"]["dns_lost"] == 42
    assert events["lookups"]["losses"] == {"dns_ringbuf_lost": 5, "gai_ringbuf_full": 3}
    assert events["lookups"]["lost"] == 8 and events["lookups"]["dns_lost"] == 5  # gai records are not DNS
    dns.counters["ringbuf_lost"] = 45
    again = monitor.check([dns, lookups, quiet], 3)
    assert [(e["source"], e["losses"]) for e in again] == [("dns", {"ringbuf_lost": 5})]
    assert monitor.totals == {"dns": 47, "lookups": 8}
    dns.counters["pairs_lost"] = 1  # a figure that dips and comes back is not counted twice
    assert monitor.check([dns], 4) == []
    dns.counters["pairs_lost"] = 3
    assert [e["losses"] for e in monitor.check([dns], 5)] == [{"pairs_lost": 1}]


def test_pipeline_tick_sends_agent_loss_events_to_stages_and_sinks(fake_signals):
    from dnstrace.findings.engine import FindingsEngine

    lossy = LossySource("dns")
    engine, shipped = FindingsEngine(), RecordingSink("shipper")
    pipe = Pipeline(config(), extra_sinks=[shipped], signals=["other"], stages=[engine])
    pipe.sinks = [shipped]
    pipe._runner = pipeline_mod._SignalRunner(pipe)
    pipe._runner.started = [lossy]
    pipe._on_tick(10)
    assert [e for e in shipped.events if e["kind"] == "agent"] == []
    lossy.counters["ringbuf_lost"] = 123
    pipe._on_tick(11)
    agent = [e for e in shipped.events if e["kind"] == "agent"]
    assert len(agent) == 1 and agent[0]["dns_lost"] == 123
    assert len(engine.events["agent"]) == 1  # the findings engine got it too
    stats = pipe.stats()
    assert stats["agent_losses"] == {"dns": 123} and stats["pipeline"]["agent_events"] == 1
