"""gai event decoding, EAI names and the ring buffer parser, on recorded bytes."""

from __future__ import annotations

import struct

from dnstrace.kernel.ringbuf import RINGBUF_BUSY_BIT, RINGBUF_DISCARD_BIT, drain_sized
from dnstrace.signals.gai.source import (
    GAI_EVENT_HEAD,
    GAI_EVENT_SHORT,
    GAI_LAYOUTS,
    GAI_NAME_LEN,
    GAI_SHORT_NAME_LEN,
    GaiDecoder,
    error_name,
)
from dnstrace.signals.gai.spec import make_sources
from support import fake_ring, fake_ring_reader


def _raw(start=1_000, latency=2_000_000, pid=4711, tid=4712, libc_id=1, ret=0, func=0,
         comm=b"curl", name=b"web.example.test", name_len=None, size=GAI_SHORT_NAME_LEN):
    """A record as bpf/gai.bpf.c writes it: the head, then the name in a short or full-size area."""
    name_len = len(name.split(b"\0", 1)[0]) if name_len is None else name_len
    head = GAI_EVENT_HEAD.pack(start, latency, pid << 32 | tid, libc_id, ret, func, name_len, comm)
    return head + name.ljust(size, b"\0")[:size]


def _decode(raw: bytes, unix_offset_ns=0, libc_paths=None) -> dict:
    (event,) = GaiDecoder(unix_offset_ns, libc_paths).decode([GAI_LAYOUTS[len(raw)].unpack(raw)])
    return event


def _drain(producer, consumer, reader, limit=100):
    return GaiDecoder().decode(drain_sized(reader, producer, consumer, GAI_LAYOUTS, limit))


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


def test_bad_name_len_cannot_reach_past_the_name():
    assert _decode(_raw(name=b"x" * 10, name_len=64))["name"] == "x" * 10


def test_text_table_is_bounded_and_still_right_after_clearing():
    decoder = GaiDecoder(max_texts=8)
    names = [f"host{i}.example.test".encode() for i in range(50)]
    for name in names:
        assert decoder.decode([GAI_EVENT_SHORT.unpack(_raw(name=name))])[0]["name"] == name.decode()
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
    assert _names(_drain(producer, consumer, reader)) == ["one", "t" * 100]
    consumed = struct.unpack_from("<Q", consumer)[0]
    assert consumed < end  # the busy record is left for the next drain
    assert _drain(producer, consumer, reader) == []


def test_ringbuf_record_wrapping_the_end_is_read_whole_and_malformed_counted():
    # Start near the end of a 1 KiB data area so the second record wraps around.
    producer, consumer, end = fake_ring([(0, _raw(name=b"first")), (0, _raw(name=b"wraps")), (0, b"short")],
                                         data_size=1024, start_pos=1024 * 3 - 200)
    reader = fake_ring_reader(1024)
    assert _names(_drain(producer, consumer, reader)) == ["first", "wraps"]
    assert reader.malformed == 1
    assert struct.unpack_from("<Q", consumer)[0] == end


def test_make_sources_from_the_trace_flags():
    import argparse

    from dnstrace.cli.trace import add_common_arguments, add_option_flags, options_from_args
    from dnstrace.kernel.ringsource import define_lines
    from dnstrace.signals.gai.spec import SIGNAL

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    add_option_flags(parser, SIGNAL.options)
    (source,) = make_sources(options_from_args(SIGNAL, parser.parse_args(["--min-latency", "250ms"])))
    assert source.min_latency_ns == 250_000_000 and source.rescan_interval_ns == 30_000_000_000
    assert "#define GAI_MIN_LATENCY_NS 250000000ULL\n" in define_lines(source.defines())
    assert "GAI_FILTER_PIDS" not in source.defines()


def test_runs_of_short_records_are_read_whole_around_every_kind_of_break():
    """drain_sized's run path: runs cut by a discard, a long record, a malformed length,
    a busy record, the drain limit and the end of the data area (wrap)."""
    short = [_raw(name=f"s{i}".encode()) for i in range(40)]
    long_one = _raw(name=b"L" * 80, size=GAI_NAME_LEN)
    records = ([(0, r) for r in short[:10]] + [(RINGBUF_DISCARD_BIT, short[10])] + [(0, r) for r in short[11:20]]
               + [(0, long_one)] + [(0, r) for r in short[20:30]] + [(0, b"\0" * 24)]
               + [(0, r) for r in short[30:35]] + [(RINGBUF_BUSY_BIT, short[35])] + [(0, r) for r in short[36:]])
    expected = [f"s{i}" for i in range(10)] + [f"s{i}" for i in range(11, 20)] + ["L" * 80] + \
        [f"s{i}" for i in range(20, 35)]
    data_size = 8192
    producer, consumer, _end = fake_ring(records, data_size=data_size, start_pos=data_size * 5 - 1000)
    reader = fake_ring_reader(data_size)
    got = _drain(producer, consumer, reader, limit=7)
    while True:
        more = _drain(producer, consumer, reader, limit=7)
        if not more:
            break
        got += more
    assert _names(got) == expected
    assert reader.malformed == 1 and reader.records == len(expected)
