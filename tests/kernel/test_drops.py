"""``dnstrace trace drops`` against the kernel: seed 003's rp_filter drops on a device without
IPv4 address (loose mode acting as strict), reported with addresses, devices and why."""

from __future__ import annotations

import time

import pytest

from support import TraceProcess


@pytest.fixture(scope="module")
def tracer(kernel):
    tp = TraceProcess(["trace", "drops", "--json", "--reason", "IP_RPFILTER"])
    yield tp
    tp.stop()


def test_rp_filter_drops_on_device_without_address(lab, tracer):
    from dnstrace.lab.kernel_scenarios import rp_filter_no_address

    scenario = rp_filter_no_address(lab, rp_filter=2)
    counter_before = scenario.rp_filter_drops()
    scenario.send_udp(5)

    def ours(event):
        return event["kind"] == "drop" and event.get("saddr") == scenario.sender_addr

    drops = tracer.wait_for(lambda e: ours(e) and sum(x["count"] for x in tracer.snapshot() if ours(x)) >= 5,
                            timeout_s=10)
    drops = [e for e in tracer.snapshot() if ours(e)]
    kernel_count = scenario.rp_filter_drops() - counter_before
    assert kernel_count == 5
    assert sum(e["count"] for e in drops) == kernel_count
    for drop in drops:
        assert drop["reason"] == "IP_RPFILTER"
        assert drop["daddr"] == scenario.target_addr
        assert drop["iif_name"] == scenario.ingress_dev and drop["iif"] == scenario.ingress_ifindex
        assert drop["return_dev"] == scenario.return_dev
        assert drop["location"].startswith("ip_rcv_finish_core")
        assert drop["protocol"] in ("ipv4", "udp")
        assert drop["attribution"] in ("flow", "none")
        why = drop["why"]
        assert "loose rp_filter (2) behaves as strict" in why
        assert f"device {scenario.ingress_dev}" in why and "has no IPv4 address" in why
        assert scenario.router.name in why and scenario.return_dev in why

    # The fix: an address on the ingress device. Loose mode then accepts; nothing more is dropped.
    scenario.add_address()
    seen = len(tracer.snapshot())
    scenario.send_udp(5)
    time.sleep(1.5)
    assert scenario.rp_filter_drops() - counter_before == 5
    assert [e for e in tracer.snapshot()[seen:] if ours(e)] == []


def test_strict_rp_filter_with_address_is_named_strict(lab, tracer):
    from dnstrace.lab.kernel_scenarios import rp_filter_no_address

    scenario = rp_filter_no_address(lab, rp_filter=1)
    scenario.add_address()  # strict mode drops even with an address: the reverse route uses eth1
    scenario.send_udp(2)
    drops = tracer.wait_for(lambda e: e["kind"] == "drop" and e.get("saddr") == scenario.sender_addr, timeout_s=10)
    assert drops, tracer.snapshot()[-5:]
    assert drops[0]["why"].startswith("strict rp_filter (1)")
    assert drops[0]["return_dev"] == scenario.return_dev


def test_counts_add_up_at_shutdown_with_sampling(lab):
    """Over the event budget, drops are only counted; stopping right after the burst still
    reports them (the tracer's flush at shutdown), so the stream's counts equal the kernel's."""
    from dnstrace.lab.kernel_scenarios import rp_filter_no_address

    scenario = rp_filter_no_address(lab, rp_filter=2)
    tracer = TraceProcess(["trace", "drops", "--json", "--reason", "IP_RPFILTER", "--event-budget", "2"])
    try:
        counter_before = scenario.rp_filter_drops()
        scenario.send_udp(12)
        kernel_count = scenario.rp_filter_drops() - counter_before
    finally:
        tracer.stop()
    assert kernel_count == 12
    drops = [e for e in tracer.snapshot() if e["kind"] == "drop" and e["iif_name"] == scenario.ingress_dev]
    assert sum(e["count"] for e in drops) == kernel_count
    exact = [e for e in drops if not e["sampled"]]
    assert len(exact) == 2 and all(e["saddr"] == scenario.sender_addr for e in exact)
    assert all(e["reason"] == "IP_RPFILTER" for e in drops)
