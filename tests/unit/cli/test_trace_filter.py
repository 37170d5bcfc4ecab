"""trace's command-line filters: none at all when none is given (the batch passes as is)."""

from types import SimpleNamespace

from dnstrace.cli.trace import build_filter
from dnstrace.signals.gai.spec import SIGNAL


def _args(**kw):
    base = dict(pid=None, comm=None, min_latency=None, duration=None, json=True)
    base.update(kw)
    return SimpleNamespace(**base)


def test_no_filter_given_means_no_predicate():
    assert build_filter(_args(), SIGNAL) is None


def test_pid_comm_and_latency_filters_combine():
    keep = build_filter(_args(pid=[7], comm=["curl"], min_latency="10ms"), SIGNAL)
    assert keep({"pid": 7, "comm": "curl", "latency_ns": 20_000_000})
    assert not keep({"pid": 8, "comm": "curl", "latency_ns": 20_000_000})
    assert not keep({"pid": 7, "comm": "wget", "latency_ns": 20_000_000})
    assert not keep({"pid": 7, "comm": "curl", "latency_ns": 1_000})
