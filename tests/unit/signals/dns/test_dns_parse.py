"""The user-space DNS parser: real messages, truncated captures, hostile packets."""

from __future__ import annotations

import struct

import pytest

from dnstrace.lab.dns_servers import build_message as message
from dnstrace.lab.dns_servers import encode_name, hostile_payloads
from dnstrace.signals.dns.parse import MalformedDns, parse_message, qtype_name, rcode_name, split_tcp_stream


def test_query_fields():
    msg = parse_message(message(msg_id=77, qtype=28))
    assert (msg.id, msg.qr, msg.rd, msg.qname, msg.qtype_name) == (77, False, True, "web.example.test", "AAAA")
    assert msg.complete


def test_answer_with_records_and_compression():
    cname_target = encode_name("real.example.test")
    raw = message(flags=0x8180, answers=[(5, cname_target), (1, bytes([10, 1, 2, 3])),
                                         (28, bytes(15) + b"\x01")])
    msg = parse_message(raw)
    assert msg.qr and msg.ra and not msg.tc
    assert msg.rcode_name == "NOERROR" and msg.ancount == 3
    assert msg.answers == ["real.example.test", "10.1.2.3", "::1"]


def test_flags_and_codes():
    msg = parse_message(message(flags=0x8380, rcode=3))
    assert msg.tc and msg.rcode_name == "NXDOMAIN"
    assert rcode_name(2) == "SERVFAIL" and rcode_name(15) == "RCODE15"
    assert qtype_name(33) == "SRV" and qtype_name(999) == "TYPE999"


def test_capture_cut_short_is_not_malformed():
    raw = message(flags=0x8180, answers=[(1, bytes([10, 0, 0, i])) for i in range(10)])
    msg = parse_message(raw[:60], total_len=len(raw))
    assert not msg.complete and msg.qname == "web.example.test"
    # the same bytes claiming to be the whole message lie about their counts
    with pytest.raises(MalformedDns):
        parse_message(raw[:60])


@pytest.mark.parametrize("payload", hostile_payloads(), ids=lambda p: p[12:16].hex())
def test_hostile_packets_are_malformed(payload):
    with pytest.raises(MalformedDns):
        parse_message(payload)


def test_too_short():
    with pytest.raises(MalformedDns):
        parse_message(b"\x00" * 11)


def test_forward_pointer_refused():
    raw = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x20" + b"\x00" * 30
    with pytest.raises(MalformedDns):
        parse_message(raw)


def test_tcp_stream_two_messages_and_a_partial_one():
    a, b = message(msg_id=1), message(msg_id=2, qtype=28)
    stream = struct.pack("!H", len(a)) + a + struct.pack("!H", len(b)) + b[:10]
    parts = split_tcp_stream(stream, len(stream) + len(b) - 10)
    assert [length for _, _, length in parts] == [len(a), len(b)]
    assert parse_message(parts[0][1], parts[0][2]).id == 1
    with pytest.raises(MalformedDns):  # the second one has no full header captured
        parse_message(parts[1][1], parts[1][2])
