"""Drop reasons from tracefs text, drop event decoding and the rp_filter explanation (no kernel)."""

from __future__ import annotations

import socket

import pytest

from dnstrace.enrich.netdev import DeviceFacts, NetnsRef, effective_rp_filter, explain_rp_filter_drop
from dnstrace.errors import UsageError
from dnstrace.kernel.tracefs import parse_format
from dnstrace.signals.drops.source import EVENT_HEAD, FIB, NFIB, decode_event, pick_lookups, resolve_reasons

FORMAT_6_18 = """name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 12, "NETFILTER_DROP" }, { 16, "IP_RPFILTER" }, { 89, "IP_LOCAL_SOURCE" })
"""


def test_reasons_come_from_the_print_fmt():
    fmt = parse_format(FORMAT_6_18, "skb", "kfree_skb")
    assert fmt.symbols("reason") == {2: "NOT_SPECIFIED", 12: "NETFILTER_DROP", 16: "IP_RPFILTER", 89: "IP_LOCAL_SOURCE"}
    assert fmt.fields["reason"].offset == 36 and fmt.fields["reason"].ctype == "enum skb_drop_reason"
    assert fmt.has_field("rx_sk") and fmt.fields["skbaddr"].size == 8


def test_resolve_reasons_rejects_unknown_names_and_reports_missing_defaults():
    table = {12: "NETFILTER_DROP", 16: "IP_RPFILTER"}
    wanted, missing = resolve_reasons(None, table)
    assert wanted == {16: "IP_RPFILTER", 12: "NETFILTER_DROP"} and "IP_INVALID_SOURCE" in missing
    with pytest.raises(UsageError):
        resolve_reasons(["NO_SUCH_REASON"], table)


def fib(ts, iif, src, dst, name, sport=0, dport=0, proto=0):
    return FIB.pack(ts, 254, 0, 0, iif, socket.inet_aton(src), socket.inet_aton(dst), sport, dport, proto, name.encode())


def test_rp_filter_drop_decodes_forward_and_reverse_lookups():
    fibs = [fib(90, 1, "0.0.0.0", "8.8.8.8", "eth9"),  # an older output lookup: ignored
            fib(110, 57, "10.1.0.2", "10.1.1.1", "lo", 0, 0, 17),  # input route of the packet
            fib(120, 1, "10.1.1.1", "10.1.0.2", "eth1")]  # rp_filter's reverse lookup
    fibs += [bytes(FIB.size)] * (NFIB - len(fibs))
    head = EVENT_HEAD.pack(200, 0xFFFF1, 0xFFFF2, 0, 100, 16, 0x0800, 1, 3, b"eth0" + bytes(12), b"swapper/0" + bytes(7))
    event = decode_event(head + b"".join(fibs), {16: "IP_RPFILTER"}, 1000, ksym=lambda a: "ip_rcv_finish_core")
    assert event["reason"] == "IP_RPFILTER" and event["ts"] == 1200
    assert (event["saddr"], event["daddr"], event["iif"], event["iif_name"]) == ("10.1.0.2", "10.1.1.1", 57, "eth0")
    assert event["return_dev"] == "eth1" and event["protocol"] == "udp"
    assert event["pid"] is None and event["attribution"] == "flow"


def test_output_path_drop_is_attributed_to_the_sender():
    fibs = [fib(195, 1, "10.2.0.2", "10.2.0.1", "eth0", 40002, 53, 17)] + [bytes(FIB.size)] * (NFIB - 1)
    head = EVENT_HEAD.pack(200, 1, 2, (4711 << 32) | 4712, 0, 12, 0x0800, 0, 1, bytes(16), b"python3" + bytes(9))
    event = decode_event(head + b"".join(fibs), {12: "NETFILTER_DROP"}, 0)
    assert event["attribution"] == "exact" and event["pid"] == 4711 and event["tid"] == 4712
    assert (event["sport"], event["dport"], event["comm"]) == (40002, 53, "python3")


def test_pick_lookups_ignores_lookups_before_the_packet_arrived():
    fibs = [{"ts": 5, "iif": 3, "src": "a", "dst": "b", "name": ""}]
    assert pick_lookups(fibs, drop_ts=20, rx_ts=10) == (None, None)


def test_effective_rp_filter_is_the_max_of_all_and_device():
    assert effective_rp_filter(0, 2) == 2 and effective_rp_filter(1, 0) == 1 and effective_rp_filter(None, None) is None


def test_why_names_seed_003_cause():
    dev = DeviceFacts(NetnsRef(42, "/run/netns/rtr", "rtr"), 57, "eth0", (), 0, 2)
    why = explain_rp_filter_drop([dev], "eth1")
    assert why.startswith("loose rp_filter (2) behaves as strict: device eth0 in netns 42 (rtr) has no IPv4 address")
    assert "eth1" in why
    with_addr = DeviceFacts(None, 57, "eth0", ("10.0.0.1",), 1, 0)
    assert explain_rp_filter_drop([with_addr], "eth1").startswith("strict rp_filter (1)")


def test_flush_reports_sampled_drops_since_the_last_tick():
    from dnstrace.signals.drops.source import KEY, VALUE, DropsSource

    class NoRecords:
        fd, malformed = 99, 0

        def drain_with(self, _decode):
            return []

    key = KEY.pack(16, 0, b"eth0" + bytes(12))
    counts = {key: VALUE.pack(30, 10, 0, 20)}
    source = DropsSource(event_budget=20)
    source.bpf, source.reader, source.all_reasons = {"counts": counts}, NoRecords(), {16: "IP_RPFILTER"}
    ticked = source.tick(now_ns=1)
    counts[key] = VALUE.pack(45, 25, 0, 20)
    flushed = source.flush()
    assert [(e["reason"], e["count"], e["sampled"], e["iif_name"]) for e in ticked + flushed] == [
        ("IP_RPFILTER", 10, True, "eth0"), ("IP_RPFILTER", 15, True, "eth0")]
    assert source.flush() == []  # nothing new: nothing reported twice
