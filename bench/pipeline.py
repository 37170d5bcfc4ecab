"""Pipeline throughput: events/s from a fake source through enrichment to a null sink.

Measures the agent's own per-event cost (runner loop + Enricher + sink fan-out), without
the kernel: a source hands out pre-built dns events in batches as fast as epoll wakes it.
Run: .venv/bin/python bench/pipeline.py
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from dnstrace.config import load
from dnstrace.flow import Sink, Source
from dnstrace.pipeline import runner as pipeline_mod
from dnstrace.pipeline.runner import Pipeline
from dnstrace.signals.base import SignalSpec

TOTAL = 500_000


class FastSource(Source):
    name = "fast"

    def __init__(self, batch: int):
        self.batch = batch
        self.sent = 0
        self.read_fd, self.write_fd = os.pipe()
        os.write(self.write_fd, b"x")  # always readable: epoll never waits
        pid = os.getpid()
        self.template = {"kind": "dns", "ts": 0, "pid": pid, "tid": pid, "qname": "kafka.service.consul",
                         "qtype": "A", "server": "10.0.0.2", "dport": 53, "sport": 40000, "proto": "udp",
                         "id": 1, "rcode": "NOERROR", "latency_ns": 1_000_000}

    def fds(self):
        return [self.read_fd]

    def poll(self):
        if self.sent >= TOTAL:
            return []
        self.sent += self.batch
        now = time.time_ns()
        return [dict(self.template, ts=now, id=i) for i in range(self.batch)]

    def close(self):
        os.close(self.read_fd)
        os.close(self.write_fd)


class CountingSink(Sink):
    name = "count"

    def __init__(self, pipe_holder):
        self.count = 0
        self.done = threading.Event()

    def handle(self, events):
        self.count += len(events)
        if self.count >= TOTAL:
            self.done.set()


@dataclass(frozen=True)
class NoOptions:
    pass


def run(batch: int) -> float:
    source = FastSource(batch)
    target = SignalSpec("fast", "", "", (), NoOptions, lambda options: [source])
    pipeline_mod.available_targets = lambda: {"fast": target}
    pipeline_mod.known_signal_names = lambda: {"fast"}
    sink = CountingSink(None)
    pipe = Pipeline(load(os.devnull, environ={}), extra_sinks=[sink], signals=["fast"], sink_modules=())
    start = time.perf_counter()
    thread = threading.Thread(target=pipe.run, kwargs={"on_ready": lambda: None}, daemon=True)
    thread.start()
    sink.done.wait(300)
    elapsed = time.perf_counter() - start
    pipe.stop()
    thread.join(10)
    return sink.count / elapsed


if __name__ == "__main__":
    for batch in (64, 1024):
        rate = run(batch)
        print(f"pipeline (runner + enrich + 1 sink), batches of {batch:5d}: {rate / 1e3:8.1f}k events/s")
