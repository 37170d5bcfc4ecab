"""Fuzz the DNS parser: random and mutated bytes never raise anything but MalformedDns.

A tight loop runs 100k+ inputs (mutations of real messages and of hostile ones,
plus pure noise); hypothesis adds structured round-trips. Every loop in the
parser is bounded by the input, so finishing at all is part of the check.
"""

from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dnstrace.lab.dns_servers import build_message as message
from dnstrace.lab.dns_servers import encode_name, hostile_payloads
from dnstrace.signals.dns.parse import MalformedDns, parse_message, split_tcp_stream

FUZZ_INPUTS = 120_000


def _seeds() -> list[bytes]:
    answers = [(1, bytes([10, 0, 0, i])) for i in range(5)] + [(5, encode_name("x.example.test"))]
    return [message(), message(flags=0x8180, answers=answers), message(flags=0x8380, rcode=3)] + hostile_payloads()


def _mutate(rng: random.Random, data: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.5 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.65 and data:
            del data[rng.randrange(len(data)):]
        elif choice < 0.8:
            data[rng.randrange(len(data) + 1):0] = bytes([0xC0 | rng.randrange(64), rng.randrange(256)])
        else:
            data.extend(rng.randbytes(rng.randrange(1, 16)))
    return data


def test_fuzz_random_and_mutated_inputs():
    rng = random.Random(4)
    seeds = _seeds()
    parsed = malformed = 0
    for i in range(FUZZ_INPUTS):
        if i % 5 == 0:
            data = rng.randbytes(rng.randrange(0, 80))
        else:
            data = bytes(_mutate(rng, bytearray(rng.choice(seeds))))
        total = len(data) + (rng.randrange(0, 100) if i % 3 == 0 else 0)  # sometimes a cut capture
        try:
            msg = parse_message(data, total)
            assert msg.qname is None or len(msg.qname) <= 4 * 255  # escapes may widen bytes
            assert len(msg.answers) <= 16
            parsed += 1
        except MalformedDns:
            malformed += 1
        if i % 7 == 0:
            for _, part, length in split_tcp_stream(data, total):
                try:
                    parse_message(part, length)
                except MalformedDns:
                    pass
    assert parsed + malformed == FUZZ_INPUTS
    assert parsed > 1000 and malformed > 1000  # the mutations reach both outcomes


labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(labels, min_size=1, max_size=6), st.integers(0, 65535), st.integers(1, 300),
       st.lists(st.binary(min_size=4, max_size=4), max_size=8))
def test_roundtrip_structured(parts, msg_id, qtype, addresses):
    name = ".".join(parts)
    raw = message(msg_id=msg_id, flags=0x8180, name=name, qtype=qtype, answers=[(1, a) for a in addresses])
    msg = parse_message(raw)
    assert (msg.id, msg.qname, msg.qtype, msg.ancount) == (msg_id, name, qtype, len(addresses))
    assert msg.answers == [".".join(str(b) for b in a) for a in addresses]


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=12, max_size=300), st.integers(0, 200))
def test_arbitrary_bytes(data, extra):
    try:
        parse_message(data, len(data) + extra)
    except MalformedDns:
        pass
    header = struct.pack("!H", len(data)) + data
    for _, part, length in split_tcp_stream(header, len(header)):
        try:
            parse_message(part, length)
        except MalformedDns:
            pass
