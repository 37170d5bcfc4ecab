"""dnstrace.signals.dns.parse against an outside reference (dnspython) and exact protocol boundaries.

Expected values come from dnspython (test-only oracle) or from literal bytes built
here by hand, never from the parser itself.
"""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dnstrace.signals.dns.parse import (
    MalformedDns,
    parse_message,
    qtype_name,
    rcode_name,
    read_name,
    split_tcp_stream,
)

# Every type/rcode the parser names, with the text the reference gives it.
NAMED_TYPES = [1, 2, 5, 6, 12, 13, 15, 16, 28, 33, 35, 41, 43, 46, 47, 48, 64, 65, 252, 255, 257]


@pytest.mark.parametrize("code", NAMED_TYPES)
def test_type_names_match_dnspython(code):
    assert qtype_name(code) == dns.rdatatype.to_text(code)


@pytest.mark.parametrize("code", [3, 4, 7, 44, 49, 66, 251, 253, 258])
def test_unnamed_types_are_typeNNN(code):
    assert qtype_name(code) == f"TYPE{code}"


def test_no_qtype_has_no_name():
    assert qtype_name(None) is None


@pytest.mark.parametrize("code", range(0, 11))
def test_rcode_names_match_dnspython(code):
    assert rcode_name(code) == dns.rcode.to_text(code)


@pytest.mark.parametrize("code", [11, 12, 15])
def test_unnamed_rcodes(code):
    assert rcode_name(code) == f"RCODE{code}"


def _wire(msg: dns.message.Message) -> bytes:
    return msg.to_wire()


@pytest.mark.parametrize("flags,opcode,rcode", [
    (dns.flags.QR | dns.flags.AA | dns.flags.RD | dns.flags.RA, dns.opcode.QUERY, dns.rcode.NXDOMAIN),
    (dns.flags.QR | dns.flags.TC, dns.opcode.STATUS, dns.rcode.REFUSED),
    (0, dns.opcode.NOTIFY, dns.rcode.SERVFAIL),
    (dns.flags.QR | dns.flags.RA, dns.opcode.IQUERY, dns.rcode.NOTIMP),
])
def test_header_fields_match_dnspython(flags, opcode, rcode):
    ref = dns.message.make_query("web.example.test", "AAAA")
    ref.id = 0xBEEF
    ref.flags = flags
    ref.set_opcode(opcode)
    ref.set_rcode(rcode)
    raw = _wire(ref)
    back = dns.message.from_wire(raw)
    msg = parse_message(raw)
    assert (msg.id, msg.opcode, msg.rcode) == (0xBEEF, back.opcode(), back.rcode())
    assert msg.qr == bool(back.flags & dns.flags.QR)
    assert msg.aa == bool(back.flags & dns.flags.AA)
    assert msg.tc == bool(back.flags & dns.flags.TC)
    assert msg.rd == bool(back.flags & dns.flags.RD)
    assert msg.ra == bool(back.flags & dns.flags.RA)
    assert (msg.qname, msg.qtype, msg.qclass) == ("web.example.test", 28, 1)
    assert (msg.qdcount, msg.ancount, msg.nscount, msg.arcount) == (1, 0, 0, 0)


def _response(records: list[tuple[str, str]], qname="web.example.test", qtype="A", extra=0) -> bytes:
    query = dns.message.make_query(qname, qtype)
    resp = dns.message.make_response(query)
    for rtype, value in records:
        resp.answer.append(dns.rrset.from_text(qname + ".", 30, "IN", rtype, value))
    for i in range(extra):
        resp.additional.append(dns.rrset.from_text(f"x{i}.example.test.", 30, "IN", "A", "10.9.9.9"))
    return resp.to_wire()


def test_answers_match_dnspython_in_order():
    raw = _response([("CNAME", "real.example.test."), ("A", "10.1.2.3"), ("AAAA", "2001:db8::7")])
    ref = dns.message.from_wire(raw)
    expected = []
    for rrset in ref.answer:
        for rdata in rrset:
            expected.append(rdata.to_text().rstrip("."))
    msg = parse_message(raw)
    assert msg.answers == expected == ["real.example.test", "10.1.2.3", "2001:db8::7"]
    assert msg.complete is True


def test_additional_records_count_but_are_not_answers():
    raw = _response([("A", "10.1.2.3")], extra=2)
    msg = parse_message(raw)
    assert (msg.ancount, msg.arcount) == (1, 2)
    assert msg.answers == ["10.1.2.3"]


def test_answers_are_not_read_from_a_query_or_when_not_wanted():
    raw = bytearray(_response([("A", "10.1.2.3")]))
    assert parse_message(bytes(raw), want_answers=False).answers == []
    raw[2] &= 0x7F  # clear QR: a "query" carrying an answer section
    assert parse_message(bytes(raw)).answers == []


def test_sixteen_answers_kept_the_seventeenth_dropped():
    values = [f"10.0.0.{i}" for i in range(1, 18)]
    query = dns.message.make_query("many.example.test", "A")
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text_list("many.example.test.", 30, "IN", "A", values))
    raw = resp.to_wire()
    msg = parse_message(raw)
    assert msg.ancount == 17
    assert len(msg.answers) == len(set(msg.answers)) == 16  # dnspython writes an rrset in set order
    assert set(msg.answers) < set(values)


# --- hand-built hostile and boundary shapes ------------------------------------

def header(qd=1, an=0, ns=0, ar=0, flags=0x8180, msg_id=0x1234) -> bytes:
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


def name(*labels: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\x00"


def question(n: bytes = None, qtype=1) -> bytes:
    return (n if n is not None else name("a", "test")) + struct.pack("!HH", qtype, 1)


def test_exactly_twelve_bytes_is_a_header_only_message():
    msg = parse_message(header(qd=0))
    assert (msg.qname, msg.complete) == (None, True)


def test_eleven_bytes_is_malformed():
    with pytest.raises(MalformedDns, match="shorter than a DNS header"):
        parse_message(header(qd=0)[:11])


def test_capture_shorter_than_header_of_a_longer_message():
    with pytest.raises(MalformedDns, match="capture shorter than a DNS header"):
        parse_message(header()[:11], total_len=40)


def test_counts_exactly_fitting_are_accepted_one_more_byte_needed_is_not():
    # one question (min 5 bytes) + one record (min 11) = 16 bytes after the header
    body = question(b"\x00") + b"\x00" + struct.pack("!HHIH", 99, 1, 0, 0)
    assert len(body) == 16
    msg = parse_message(header(qd=1, an=1) + body)
    assert (msg.qname, msg.qtype, msg.answers) == (".", 1, [])
    with pytest.raises(MalformedDns, match="record counts exceed"):
        parse_message(header(qd=1, an=1) + body[:-1])
    for counts in ({"ns": 1}, {"ar": 1}):
        with pytest.raises(MalformedDns, match="record counts exceed"):
            parse_message(header(qd=1, an=1, **counts) + body)
    with pytest.raises(MalformedDns, match="record counts exceed"):
        parse_message(header(qd=2, an=1) + body + b"\x00" * 4)  # 2*5 + 11 = 21 > 20


def test_second_question_is_validated_and_skipped():
    raw = header(qd=2, flags=0x0100) + question(name("one", "test")) + question(name("two", "test"), 28)
    msg = parse_message(raw)
    assert (msg.qname, msg.qtype, msg.qdcount, msg.complete) == ("one.test", 1, 2, True)
    with pytest.raises(MalformedDns, match="field runs past the end"):
        parse_message(raw[:-1])
    cut = parse_message(raw[:-1], total_len=len(raw))
    assert (cut.qname, cut.complete) == ("one.test", False)


def test_truncated_capture_is_incomplete_not_malformed():
    raw = header(qd=1) + question(name("web", "example", "test"))
    for cut in range(13, len(raw)):
        msg = parse_message(raw[:cut], total_len=len(raw))
        assert msg.complete is False, cut
    assert parse_message(raw, total_len=len(raw)).complete is True


def test_capture_longer_than_message_reads_only_the_message():
    raw = header(qd=1, flags=0x8180, an=0) + question(name("a", "test"))
    msg = parse_message(raw + b"\xc0\x0c" * 8, total_len=len(raw))
    assert (msg.qname, msg.complete) == ("a.test", True)


def test_name_of_255_bytes_is_accepted_256_is_not():
    # RFC 1035 2.3.4: the wire form, length bytes and the final zero included, is at most 255
    with pytest.raises(dns.name.NameTooLong):
        dns.name.Name([b"a" * 63] * 3 + [b"b" * 62, b""])
    labels_ok = ["a" * 63] * 3 + ["b" * 61]  # 3*64 + 62 + 1 = 255
    buf = header() + name(*labels_ok)
    text, after = read_name(buf, 12, len(buf))
    assert text == ".".join(labels_ok) and after == len(buf)
    labels_bad = ["a" * 63] * 3 + ["b" * 62]  # 256
    buf = header() + name(*labels_bad)
    with pytest.raises(MalformedDns, match="longer than 255"):
        read_name(buf, 12, len(buf))


def test_root_name_and_label_ending_exactly_at_the_end():
    buf = header() + b"\x00"
    assert read_name(buf, 12, len(buf)) == (".", 13)
    buf = header() + b"\x03abc"  # label fits exactly, but the terminating zero is missing
    with pytest.raises(Exception) as caught:
        read_name(buf, 12, len(buf))
    assert type(caught.value).__name__ == "_Truncated"
    buf = header() + b"\x03ab"
    with pytest.raises(Exception) as caught:
        read_name(buf, 12, len(buf))
    assert type(caught.value).__name__ == "_Truncated"


def test_pointer_to_a_far_offset_uses_all_fourteen_bits():
    # a name at offset 300 reached through a pointer: 300 needs the high byte
    filler = b"\x00" * (300 - 12)
    target = name("far", "test")
    buf = header() + filler + target + b"\xc1\x2c"  # 0x12c = 300
    text, after = read_name(buf, len(buf) - 2, len(buf))
    assert (text, after) == ("far.test", len(buf))


def test_pointer_to_itself_and_forward_are_rejected():
    buf = header() + b"\xc0\x0c"
    with pytest.raises(MalformedDns, match="does not point backwards"):
        read_name(buf, 12, len(buf))
    buf = header() + b"\xc0\x0e" + name("x")
    with pytest.raises(MalformedDns, match="does not point backwards"):
        read_name(buf, 12, len(buf))


def test_pointer_into_the_header_is_rejected():
    buf = header() + b"\x00" + b"\xc0\x0b"
    with pytest.raises(MalformedDns, match="into the header"):
        read_name(buf, 13, len(buf))


def test_sixty_four_jumps_allowed_sixty_five_not():
    # a chain: name at 12 is root; each later pointer points to the previous pointer
    def chain(n):
        buf = bytearray(header() + b"\x00")
        prev = 12
        for _ in range(n):
            here = len(buf)
            buf += bytes([0xC0 | (prev >> 8), prev & 0xFF])
            prev = here
        return bytes(buf), prev
    buf, start = chain(64)
    assert read_name(buf, start, len(buf)) == (".", start + 2)
    buf, start = chain(65)
    with pytest.raises(MalformedDns, match="too many compression pointers"):
        read_name(buf, start, len(buf))


def test_reserved_label_types_are_rejected():
    for first in (0x40, 0x80):
        buf = header() + bytes([first | 1]) + b"x\x00"
        with pytest.raises(MalformedDns, match="reserved label type"):
            read_name(buf, 12, len(buf))


def test_pointer_cut_after_its_first_byte_is_truncation():
    buf = header() + b"\x00" + b"\xc0"
    with pytest.raises(Exception) as caught:
        read_name(buf, 13, len(buf))
    assert type(caught.value).__name__ == "_Truncated"


def test_name_after_a_pointer_resumes_after_the_pointer():
    buf = header() + name("a", "test") + b"\x03www\xc0\x0c" + b"\xff"
    assert read_name(buf, 20, len(buf)) == ("www.a.test", 26)


def _answer(rtype: int, rdata: bytes, rdlength: int | None = None) -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 30, len(rdata) if rdlength is None else rdlength) + rdata


@pytest.mark.parametrize("rtype,rdata,needle", [
    (1, b"\x0a\x00\x00", "A record with a length other than 4"),
    (1, b"\x0a\x00\x00\x01\x02", "A record with a length other than 4"),
    (28, b"\x00" * 15, "AAAA record with a length other than 16"),
    (28, b"\x00" * 17, "AAAA record with a length other than 16"),
])
def test_address_records_of_the_wrong_length(rtype, rdata, needle):
    raw = header(qd=1, an=1) + question() + _answer(rtype, rdata)
    with pytest.raises(MalformedDns, match=needle):
        parse_message(raw)


def test_cname_running_past_its_record_is_malformed():
    target = name("long", "example", "test")
    raw = header(qd=1, an=1) + question() + _answer(5, target, rdlength=len(target) - 1) + b"\x00"
    with pytest.raises(MalformedDns, match="CNAME target runs past its record"):
        parse_message(raw)


def test_record_header_cut_is_incomplete_and_rdata_beyond_message_is_malformed():
    full = header(qd=1, an=1) + question() + _answer(1, b"\x0a\x00\x00\x01")
    rec_start = len(header()) + len(question())
    # 2-byte owner + 10-byte fixed part: cutting at owner+9 leaves the fixed part one short
    cut = full[:rec_start + 2 + 9]
    msg = parse_message(cut, total_len=len(full))
    assert (msg.complete, msg.answers) == (False, [])
    msg = parse_message(full[:rec_start + 2 + 10], total_len=len(full))
    assert (msg.complete, msg.answers) == (False, [])
    lying = header(qd=1, an=1) + question() + _answer(16, b"abc", rdlength=4)
    with pytest.raises(MalformedDns, match="field runs past the end"):
        parse_message(lying)


def test_unknown_record_types_are_skipped_by_their_length():
    raw = header(qd=1, an=2) + question() + _answer(16, b"\x03txt") + _answer(1, b"\x0a\x00\x00\x09")
    assert parse_message(raw).answers == ["10.0.0.9"]


# --- DNS over TCP ----------------------------------------------------------------

def test_tcp_stream_splits_length_prefixed_messages():
    one = header(qd=0, msg_id=1)
    two = header(qd=1, msg_id=2) + question()
    stream = struct.pack("!H", len(one)) + one + struct.pack("!H", len(two)) + two
    assert split_tcp_stream(stream, len(stream)) == [(2, one, 12), (16, two, len(two))]


def test_tcp_length_uses_both_bytes():
    big = b"\x00" * 300
    stream = struct.pack("!H", 300) + big
    assert split_tcp_stream(stream, len(stream)) == [(2, big, 300)]


def test_tcp_stream_with_one_byte_left_has_no_further_message():
    one = header(qd=0)
    stream = struct.pack("!H", 12) + one + b"\x00"
    assert split_tcp_stream(stream, len(stream)) == [(2, one, 12)]
    stream = struct.pack("!H", 12) + one + b"\x00\x05"
    assert split_tcp_stream(stream, len(stream)) == [(2, one, 12), (16, b"", 5)]
    # the segment is longer than what was captured: stop at the capture
    assert split_tcp_stream(stream[:14], 100) == [(2, one[:12], 12)]
    assert split_tcp_stream(stream, 15) == [(2, one, 12)]


def test_tcp_stream_keeps_at_most_64_messages():
    stream = b"\x00\x00" * 70  # 70 empty messages
    out = split_tcp_stream(stream, len(stream))
    assert len(out) == 64
    assert out[-1] == (128, b"", 0)
    assert len(split_tcp_stream(b"\x00\x00" * 64, 128)) == 64
