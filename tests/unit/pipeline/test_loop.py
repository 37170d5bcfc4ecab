"""The runner: events flow to the callback, ticks happen, every source is closed on stop."""

import os
import threading

import pytest

from dnstrace.flow import Source
from dnstrace.pipeline.loop import Runner
from dnstrace.stop import StopFlag


class PipeSource(Source):
    """Emits one event per byte written to a pipe, like a ring buffer wakes epoll."""

    name = "pipe"

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.ticks = 0
        self.closed = 0

    def fds(self):
        return [self.read_fd]

    def poll(self):
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return []
        return [{"kind": "test", "n": b} for b in data]

    def tick(self, now_ns):
        self.ticks += 1
        return [{"kind": "tick", "ts": now_ns}]

    def flush(self):
        return [{"kind": "held-back"}]

    def close(self):
        self.closed += 1
        os.close(self.read_fd)
        os.close(self.write_fd)


class FailingSource(Source):
    name = "broken"

    def start(self):
        raise RuntimeError("cannot attach")


def test_events_ticks_and_close():
    source = PipeSource()
    stop = StopFlag()
    seen = []

    def on_events(events):
        seen.extend(events)
        if sum(1 for e in seen if e["kind"] == "test") >= 3:
            stop.set()

    runner = Runner([source], stop=stop, tick_interval_s=0.05)
    threading.Timer(0.2, lambda: os.write(source.write_fd, b"\x01\x02\x03")).start()
    runner.run(on_events, duration_s=5, on_ready=lambda: None)
    assert [e["n"] for e in seen if e["kind"] == "test"] == [1, 2, 3]
    assert source.ticks >= 1 and any(e["kind"] == "tick" for e in seen)
    assert source.closed == 1
    assert seen[-1] == {"kind": "held-back"}, "events held back by a source are flushed before close"


def test_duration_ends_run_and_failed_start_still_closes_started_sources():
    good = PipeSource()
    runner = Runner([good, FailingSource()], tick_interval_s=0.05)
    with pytest.raises(RuntimeError):
        runner.run(lambda events: None, duration_s=0.1, on_ready=lambda: None)
    assert good.closed == 1
    ok = PipeSource()
    Runner([ok], tick_interval_s=0.05).run(lambda events: None, duration_s=0.1, on_ready=lambda: None)
    assert ok.closed == 1
