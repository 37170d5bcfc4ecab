"""gai event decoding, EAI names and the ring buffer parser, on recorded bytes."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from dnstrace.agent.gai import GAI_EVENT_HEAD, GAI_NAME_LEN, GAI_SHORT_NAME_LEN, GaiDecoder, error_name, make_sources
from dnstrace.agent.ringbuf import RINGBUF_BUSY_BIT, RINGBUF_DISCARD_BIT, drain_variable
from support import fake_ring, fake_ring_reader


def _raw(start=1_000, latency=2_000_000, pid=4711, tid=4712, libc_id=1, ret=0, func=0,
         comm=b"curl", name=b"web.example.test", name_len=None, size=GAI_SHORT_NAME_LEN):
    """A record as bpf/gai.bpf.c writes it: the head, then the name in a short or full-size area."""
    name_len = len(name.split(b"\0", 1)[0]) if name_len is None else name_len
    head = GAI_EVENT_HEAD.pack(start, latency, pid << 32 | tid, libc_id, ret, func, name_len, comm)
    return head + name.ljust(size, b"\0")[:size]


def _decode(raw: bytes, unix_offset_ns=0, libc_paths=None) -> dict:
    return GaiDecoder(unix_offset_ns, libc_paths)(raw, 0, len(raw))


def _names(events):
    return [e["name"] for e in events]


def test_record_sizes_match_the_kernel_structs():
    assert GAI_EVENT_HEAD.size == 56  # struct gai_event_head: no holes, 8-byte multiple
    assert len(_raw()) == 120 and len(_raw(size=GAI_NAME_LEN)) == 312


def test_decode_fields():
    event = _decode(_raw(ret=-2), unix_offset_ns=1_700_000_000_000_000_000, libc_paths={1: "/usr/lib/libc.so.6"})
    assert event == {
        "kind": "gai", "ts": 1_700_000_000_000_001_000, "pid": 4711, "tid": 4712, "comm": "curl",
        "func": "getaddrinfo", "name": "web.example.test", "latency_ns": 2_000_000,
        "error": "EAI_NONAME", "libc": "/usr/lib/libc.so.6",
    }


def test_decode_null_node_and_unknown_libc():
    event = _decode(_raw(name=b"", libc_id=9), 0, {})
    assert event["name"] is None and event["libc"] is None


def test_decode_uses_name_len_and_survives_bad_utf8():
    event = _decode(_raw(name=b"a\xffb\0garbage-after-nul", comm=b"x\0y"))
    assert event["name"] == "a\ufffdb" and event["comm"] == "x"


def test_long_name_in_full_size_record():
    name = b"a" * 200 + b".example.test"
    assert _decode(_raw(name=name, size=GAI_NAME_LEN))["name"] == name.decode()


def test_name_longer_than_its_record_is_malformed():
    with pytest.raises(ValueError):
        _decode(_raw(name=b"x" * 10, name_len=64))


def test_text_table_is_bounded_and_still_right_after_clearing():
    decoder = GaiDecoder(max_texts=8)
    names = [f"host{i}.example.test".encode() for i in range(50)]
    for name in names:
        raw = _raw(name=name)
        assert decoder(raw, 0, len(raw))["name"] == name.decode()
        assert len(decoder.texts) <= 8


def test_error_names():
    assert error_name(0, 0) is None
    assert error_name(0, -3) == "EAI_AGAIN"
    assert error_name(0, -11) == "EAI_SYSTEM"
    assert error_name(0, -77) == "EAI_-77"
    assert error_name(1, -1) == "NULL"  # gethostbyname returned NULL
    assert error_name(2, 0) is None


def test_ringbuf_reads_records_skips_discarded_and_stops_at_busy():
    # A long name: the kernel discards the short record it tried first, then writes a full one.
    good1, good2 = _raw(name=b"one"), _raw(name=b"t" * 100, size=GAI_NAME_LEN)
    producer, consumer, end = fake_ring([(0, good1), (RINGBUF_DISCARD_BIT, _raw(name=b"gone")), (0, good2),
                                         (RINGBUF_BUSY_BIT, _raw(name=b"half"))], data_size=4096)
    reader = fake_ring_reader(4096)
    out = drain_variable(reader, producer, consumer, GaiDecoder(), limit=100)
    assert _names(out) == ["one", "t" * 100]
    consumed = struct.unpack_from("<Q", consumer)[0]
    assert consumed < end  # the busy record is left for the next drain
    assert drain_variable(reader, producer, consumer, GaiDecoder(), limit=100) == []


def test_ringbuf_record_wrapping_the_end_is_read_whole_and_malformed_counted():
    # Start near the end of a 1 KiB data area so the second record wraps around.
    producer, consumer, end = fake_ring([(0, _raw(name=b"first")), (0, _raw(name=b"wraps")), (0, b"short")],
                                         data_size=1024, start_pos=1024 * 3 - 200)
    reader = fake_ring_reader(1024)
    out = drain_variable(reader, producer, consumer, GaiDecoder(), limit=100)
    assert _names(out) == ["first", "wraps"]
    assert reader.malformed == 1
    assert struct.unpack_from("<Q", consumer)[0] == end


def test_make_sources_works_with_only_common_attributes():
    args = SimpleNamespace(pid=None, comm=None, min_latency="250ms", duration=None, json=True)
    (source,) = make_sources(args)
    assert source.min_latency_ns == 250_000_000 and source.rescan_interval_ns == 30_000_000_000
    assert "#define GAI_MIN_LATENCY_NS 250000000ULL" in source._defines()
    assert "GAI_FILTER_PIDS" not in source._defines()
