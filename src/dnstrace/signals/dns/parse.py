"""Parse DNS messages from the bytes the kernel copied, without trusting them.

The wire tracer hands over a bounded prefix of each DNS payload. This module
reads the header, the first question and (for answers) the A/AAAA/CNAME
records, and rejects anything hostile with ``MalformedDns``: label loops,
compression pointers out of range or pointing forward, labels or names longer
than the protocol allows, lengths beyond the packet, reserved label types.
Every loop is bounded by the packet length, so no input can stall the agent.
A capture cut short by the kernel's copy limit is not malformed: the parser
reports what it could read (``complete=False``).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

HEADER = struct.Struct("!HHHHHH")
HEADER_LEN = HEADER.size  # 12
MAX_NAME_LEN = 255
MAX_ANSWERS_KEPT = 16

QTYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 252: "AXFR", 255: "ANY", 257: "CAA",
}
RCODES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}


class MalformedDns(ValueError):
    """The bytes are not a DNS message this parser can trust."""


@dataclass(slots=True)
class DnsMessage:
    id: int
    qr: bool  # True for a response
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    rcode: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    qname: str | None = None
    qtype: int | None = None
    qclass: int | None = None
    answers: list[str] = field(default_factory=list)  # A/AAAA addresses and CNAME targets
    complete: bool = True  # False when the capture ended before the message did

    @property
    def qtype_name(self) -> str | None:
        return qtype_name(self.qtype)

    @property
    def rcode_name(self) -> str:
        return rcode_name(self.rcode)


def qtype_name(qtype: int | None) -> str | None:
    if qtype is None:
        return None
    return QTYPES.get(qtype) or f"TYPE{qtype}"


def rcode_name(rcode: int) -> str:
    return RCODES.get(rcode) or f"RCODE{rcode}"


class _Truncated(Exception):
    """The capture ended inside the message (not an error of the message itself)."""


def read_name(buf: bytes, offset: int, end: int) -> tuple[str, int]:
    """Decode a possibly compressed name at ``offset``; returns (name, offset after it).

    ``end`` is where the captured bytes stop. Pointers must point strictly
    backwards (before the label that holds them), which rules out loops; the
    number of jumps is bounded anyway.
    """
    labels: list[str] = []
    name_len = 0
    pos = offset
    after = -1  # offset after the name in the original position, set at the first pointer
    jumps = 0
    while True:
        if pos >= end:
            raise _Truncated
        length = buf[pos]
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= end:
                raise _Truncated
            target = ((length & 0x3F) << 8) | buf[pos + 1]
            if target >= pos:
                raise MalformedDns("compression pointer does not point backwards")
            if target < HEADER_LEN:
                raise MalformedDns("compression pointer into the header")
            jumps += 1
            if jumps > 64:
                raise MalformedDns("too many compression pointers")
            if after < 0:
                after = pos + 2
            pos = target
            continue
        if kind:
            raise MalformedDns("reserved label type")
        if length == 0:
            if after < 0:
                after = pos + 1
            return ".".join(labels) if labels else ".", after
        name_len += length + 1
        if name_len + 1 > MAX_NAME_LEN:  # + 1: the terminating zero counts too (RFC 1035 2.3.4)
            raise MalformedDns("name longer than 255 bytes")
        if pos + 1 + length > end:
            raise _Truncated
        labels.append(buf[pos + 1:pos + 1 + length].decode("ascii", "backslashreplace"))
        pos += 1 + length


def parse_message(buf: bytes, total_len: int | None = None, want_answers: bool = True) -> DnsMessage:
    """Parse ``buf`` (the captured bytes of a message of ``total_len`` bytes).

    Raises ``MalformedDns`` for hostile or impossible content. A capture that
    stops early (``len(buf) < total_len``) gives ``complete=False`` and the fields
    read so far; the header is always needed.
    """
    end = len(buf)
    total = end if total_len is None else total_len
    if total < HEADER_LEN:
        raise MalformedDns("shorter than a DNS header")
    if end < HEADER_LEN:
        raise MalformedDns("capture shorter than a DNS header")
    if end > total:
        end = total  # never read past the message (TCP: the next message follows)
    msg_id, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(buf, 0)
    msg = DnsMessage(
        id=msg_id, qr=bool(flags & 0x8000), opcode=(flags >> 11) & 0xF, aa=bool(flags & 0x0400),
        tc=bool(flags & 0x0200), rd=bool(flags & 0x0100), ra=bool(flags & 0x0080), rcode=flags & 0xF,
        qdcount=qdcount, ancount=ancount, nscount=nscount, arcount=arcount,
    )
    # Each question needs at least 5 bytes, each record 11: counts beyond that are lies.
    if qdcount * 5 + (ancount + nscount + arcount) * 11 > total - HEADER_LEN:
        raise MalformedDns("record counts exceed the message length")
    try:
        pos = HEADER_LEN
        if qdcount:
            msg.qname, pos = read_name(buf, pos, end)
            if pos + 4 > end:
                raise _Truncated
            msg.qtype, msg.qclass = struct.unpack_from("!HH", buf, pos)
            pos += 4
            for _ in range(qdcount - 1):  # rare; skip, still validating
                _, pos = read_name(buf, pos, end)
                pos += 4
                if pos > end:
                    raise _Truncated
        if want_answers and msg.qr and ancount:
            _read_answers(buf, pos, end, ancount, msg)
    except _Truncated:
        if end >= total:  # the whole message was there: it lies about its own length
            raise MalformedDns("field runs past the end of the message") from None
        msg.complete = False
    return msg


def _read_answers(buf: bytes, pos: int, end: int, ancount: int, msg: DnsMessage) -> None:
    for _ in range(ancount):
        _, pos = read_name(buf, pos, end)
        if pos + 10 > end:
            raise _Truncated
        rtype, _rclass, _ttl, rdlength = struct.unpack_from("!HHIH", buf, pos)
        pos += 10
        if pos + rdlength > end:
            raise _Truncated
        if len(msg.answers) < MAX_ANSWERS_KEPT:
            if rtype == 1:
                if rdlength != 4:
                    raise MalformedDns("A record with a length other than 4")
                msg.answers.append(str(ipaddress.IPv4Address(buf[pos:pos + 4])))
            elif rtype == 28:
                if rdlength != 16:
                    raise MalformedDns("AAAA record with a length other than 16")
                msg.answers.append(str(ipaddress.IPv6Address(buf[pos:pos + 16])))
            elif rtype == 5:
                target, after = read_name(buf, pos, end)
                if after > pos + rdlength:
                    raise MalformedDns("CNAME target runs past its record")
                msg.answers.append(target)
        pos += rdlength


def split_tcp_stream(buf: bytes, total_len: int) -> list[tuple[int, bytes, int]]:
    """DNS over TCP: a segment holds length-prefixed messages. Returns (offset, bytes, msg_len)
    for every message that starts inside the captured bytes; the last may be cut short."""
    messages = []
    pos = 0
    end = len(buf)
    while pos + 2 <= min(end, total_len):
        msg_len = (buf[pos] << 8) | buf[pos + 1]
        start = pos + 2
        messages.append((start, buf[start:start + msg_len], msg_len))
        pos = start + msg_len
        if len(messages) >= 64:
            break
    return messages
