"""gai event decoding, EAI names and the ring buffer parser, on recorded bytes."""

from __future__ import annotations

import struct

from dnstrace.agent.gai import GAI_EVENT, decode, error_name, make_sources
from dnstrace.agent.ringbuf import RINGBUF_BUSY_BIT, RINGBUF_DISCARD_BIT, drain_fixed
from support import fake_ring, fake_ring_reader


def _raw(start=1_000, latency=2_000_000, pid=4711, tid=4712, libc_id=1, ret=0, func=0,
         comm=b"curl", name=b"web.example.test"):
    return GAI_EVENT.pack(start, latency, pid << 32 | tid, libc_id, ret, func, comm, name)


def test_decode_fields():
    record = GAI_EVENT.unpack(_raw(ret=-2))
    event = decode(record, unix_offset_ns=1_700_000_000_000_000_000, libc_paths={1: "/usr/lib/libc.so.6"})
    assert event == {
        "kind": "gai", "ts": 1_700_000_000_000_001_000, "pid": 4711, "tid": 4712, "comm": "curl",
        "func": "getaddrinfo", "name": "web.example.test", "latency_ns": 2_000_000,
        "error": "EAI_NONAME", "libc": "/usr/lib/libc.so.6",
    }


def test_decode_null_node_and_unknown_libc():
    event = decode(GAI_EVENT.unpack(_raw(name=b"", libc_id=9)), 0, {})
    assert event["name"] is None and event["libc"] is None


def test_decode_stops_at_nul_and_survives_bad_utf8():
    event = decode(GAI_EVENT.unpack(_raw(name=b"a\xffb\0garbage-after-nul", comm=b"x\0y")), 0, {})
    assert event["name"] == "a\ufffdb" and event["comm"] == "x"


def test_error_names():
    assert error_name(0, 0) is None
    assert error_name(0, -3) == "EAI_AGAIN"
    assert error_name(0, -11) == "EAI_SYSTEM"
    assert error_name(0, -77) == "EAI_-77"
    assert error_name(1, -1) == "NULL"  # gethostbyname returned NULL
    assert error_name(2, 0) is None


def test_ringbuf_reads_records_skips_discarded_and_stops_at_busy():
    good1, good2 = _raw(name=b"one"), _raw(name=b"two")
    producer, consumer, end = fake_ring([(0, good1), (RINGBUF_DISCARD_BIT, _raw(name=b"gone")), (0, good2),
                                         (RINGBUF_BUSY_BIT, _raw(name=b"half"))], data_size=4096)
    reader = fake_ring_reader(4096)
    out = drain_fixed(reader, producer, consumer, GAI_EVENT, limit=100)
    assert [decode(r, 0, {})["name"] for r in out] == ["one", "two"]
    consumed = struct.unpack_from("<Q", consumer)[0]
    assert consumed < end  # the busy record is left for the next drain
    assert drain_fixed(reader, producer, consumer, GAI_EVENT, limit=100) == []


def test_ringbuf_record_wrapping_the_end_is_read_whole_and_malformed_counted():
    # Start near the end of a 1 KiB data area so the second record wraps around.
    producer, consumer, end = fake_ring([(0, _raw(name=b"first")), (0, _raw(name=b"wraps")), (0, b"short")],
                                         data_size=1024, start_pos=1024 * 3 - 400)
    reader = fake_ring_reader(1024)
    out = drain_fixed(reader, producer, consumer, GAI_EVENT, limit=100)
    assert [decode(r, 0, {})["name"] for r in out] == ["first", "wraps"]
    assert reader.malformed == 1
    assert struct.unpack_from("<Q", consumer)[0] == end


def test_make_sources_from_the_trace_flags():
    import argparse

    from dnstrace.agent.gai import add_arguments
    from dnstrace.agent.trace_cmd import add_common_arguments

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    add_arguments(parser)
    (source,) = make_sources(parser.parse_args(["--min-latency", "250ms"]))
    assert source.min_latency_ns == 250_000_000 and source.rescan_interval_ns == 30_000_000_000
    assert "#define GAI_MIN_LATENCY_NS 250000000ULL" in source._defines()
    assert "GAI_FILTER_PIDS" not in source._defines()
