"""Extra DNS servers for wire-tracing labs: truncating answers, hostile answers, raw clients.

Built on ``resolvers.build_resolver_lab`` (client + server namespaces, dnsmasq,
a dead nameserver):

* ``BIG_NAME`` has enough A records that its answer exceeds 512 bytes: dnsmasq
  sets TC on UDP answers to clients that do not announce EDNS0 (glibc by
  default) and answers in full over TCP, so glibc retries over TCP.
* ``HostileResponder``: a tiny UDP server (Python, inside the server namespace)
  that answers every query with the next of a list of malformed payloads
  (label loops, pointers out of range, lengths beyond the packet...).
* ``raw_query_script``: a Python program that speaks DNS over its own UDP socket
  (no libc resolver), for "resolvers that bypass libc".
"""

from __future__ import annotations

import struct
import sys

from dnstrace.lab.netns import Lab, Netns, wait_for_port
from dnstrace.lab.resolvers import DEFAULT_RECORDS, ResolverLab, build_resolver_lab

BIG_NAME = "big.example.test"
BIG_RECORD_COUNT = 40  # 40 A records: about 700 bytes of answer


def big_records() -> dict[str, list[str]]:
    records = dict(DEFAULT_RECORDS)
    records[BIG_NAME] = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(BIG_RECORD_COUNT)]
    return records


def build_wire_lab(lab: Lab) -> ResolverLab:
    """The resolver lab plus a name whose answer is too big for 512-byte UDP."""
    return build_resolver_lab(lab, records=big_records())


def encode_name(name: str) -> bytes:
    """A DNS name in wire form (no compression)."""
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def build_message(msg_id: int = 0x1234, flags: int = 0x0100, name: str = "web.example.test", qtype: int = 1,
                  answers=(), rcode: int = 0) -> bytes:
    """A DNS message with one question; ``answers``: [(rtype, rdata)] pointing back at the question."""
    body = encode_name(name) + struct.pack("!HH", qtype, 1)
    records = b""
    for rtype, rdata in answers:
        records += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 30, len(rdata)) + rdata
    return struct.pack("!HHHHHH", msg_id, flags | rcode, 1, len(answers), 0, 0) + body + records


def _header(msg_id: int, flags: int, qd: int, an: int, ns: int = 0, ar: int = 0) -> bytes:
    return bytes([msg_id >> 8, msg_id & 0xFF, flags >> 8, flags & 0xFF, 0, qd, 0, an, 0, ns, 0, ar])


def hostile_payloads(msg_id: int = 0x1234) -> list[bytes]:
    """DNS answers a parser must refuse without crashing or looping."""
    question = b"\x04evil\x07example\x04test\x00\x00\x01\x00\x01"
    response = 0x8180
    return [
        # a compression pointer to itself (label loop)
        _header(msg_id, response, 1, 0) + b"\xc0\x0c\x00\x01\x00\x01",
        # two pointers pointing at each other
        _header(msg_id, response, 1, 0) + b"\x01a\xc0\x10\x01b\xc0\x0c\x00\x01\x00\x01",
        # a pointer beyond the end of the packet
        _header(msg_id, response, 1, 0) + b"\xc3\xff\x00\x01\x00\x01",
        # a label longer than what follows
        _header(msg_id, response, 1, 0) + b"\x3fabc",
        # reserved label type 0x40
        _header(msg_id, response, 1, 0) + b"\x41abc\x00\x00\x01\x00\x01",
        # record counts that cannot fit the message
        _header(msg_id, response, 1, 200) + question,
        # an answer whose rdlength runs past the end
        _header(msg_id, response, 1, 1) + question + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x1e\x00\xff\x01\x02",
        # a name longer than 255 bytes
        _header(msg_id, response, 1, 0) + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
        + b"\x3f" + b"d" * 63 + b"\x3f" + b"e" * 63 + b"\x00\x00\x01\x00\x01",
    ]


HOSTILE_SERVER = r'''
import socket, sys
payloads = [bytes.fromhex(h) for h in sys.argv[3].split(",")]
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
i = 0
while True:
    data, peer = s.recvfrom(4096)
    if len(data) < 2:
        continue
    reply = bytearray(payloads[i % len(payloads)])
    reply[0:2] = data[0:2]  # keep the query id so the answer matches the socket's query
    s.sendto(bytes(reply), peer)
    i += 1
'''


class HostileResponder:
    """Answers each UDP query on ``addr:port`` in ``ns`` with the next malformed payload."""

    def __init__(self, ns: Netns, addr: str, port: int, payloads: list[bytes] | None = None):
        self.payloads = payloads or hostile_payloads()
        self.proc = ns.popen([sys.executable, "-c", HOSTILE_SERVER, addr, str(port),
                              ",".join(p.hex() for p in self.payloads)])
        wait_for_port(ns, addr, port, "udp")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


RAW_QUERY = r'''
import os, socket, struct, sys, time
server, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
qtype = int(sys.argv[4]) if len(sys.argv) > 4 else 1
family = socket.AF_INET6 if ":" in server else socket.AF_INET
qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
msg_id = int.from_bytes(os.urandom(2), "big")
query = struct.pack("!HHHHHH", msg_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, port))
try:
    data, _ = s.recvfrom(4096)
    print(os.getpid(), msg_id, data[3] & 15, flush=True)
except socket.timeout:
    print(os.getpid(), msg_id, "timeout", flush=True)
'''


def raw_query_argv(server: str, name: str, port: int = 53, qtype: int = 1) -> list[str]:
    """A Python DNS client that bypasses libc; prints "pid id rcode"."""
    return [sys.executable, "-c", RAW_QUERY, server, str(port), name, str(qtype)]


def send_raw_udp_argv(server: str, port: int, payloads: list[bytes]) -> list[str]:
    """Send each payload as one UDP datagram to server:port (malformed queries through the kernel)."""
    script = ("import socket, sys\n"
              "fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
              "s = socket.socket(fam, socket.SOCK_DGRAM)\n"
              "for h in sys.argv[3].split(','):\n"
              "    s.sendto(bytes.fromhex(h), (sys.argv[1], int(sys.argv[2])))\n")
    return [sys.executable, "-c", script, server, str(port), ",".join(p.hex() for p in payloads)]
