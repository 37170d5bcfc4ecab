"""Shared test fixtures.

Kernel tests (``@pytest.mark.kernel`` or the ``kernel`` fixture) need root, bcc
and a BPF-capable kernel; ClickHouse tests need clickhouse-server; browser tests
need Chromium. Every such prerequisite goes through ``require``: on a developer's
machine a missing one skips the test and says why; under CI (env ``CI`` set) it
fails the test with the same reason, so a CI run cannot go green without a tier.
"""

from __future__ import annotations

import pytest

from support import TraceProcess, kernel_unavailable_reason, require  # noqa: F401  (require: for every tier)


@pytest.fixture(scope="session")
def kernel():
    reason = kernel_unavailable_reason()
    require(reason is None, f"kernel test: {reason}")
    return True


@pytest.fixture
def lab(kernel):
    from dnstrace.lab.netns import Lab

    with Lab() as the_lab:
        yield the_lab


@pytest.fixture(scope="module")
def wire_lab(kernel):
    """The DNS wire lab (dnsmasq resolvers, a hostile responder) shared by one module's tests."""
    from dnstrace.lab.dns_servers import build_wire_lab
    from dnstrace.lab.netns import Lab

    with Lab() as the_lab:
        yield build_wire_lab(the_lab)


@pytest.fixture
def trace(kernel):
    """``trace(["gai", "--pid", "123"])`` starts ``dnstrace trace gai --json --pid 123``."""
    started: list[TraceProcess] = []

    def start(argv: list[str]) -> TraceProcess:
        tp = TraceProcess(["trace", *argv[:1], "--json", *argv[1:]])
        started.append(tp)
        return tp

    yield start
    for tp in started:
        tp.stop()
