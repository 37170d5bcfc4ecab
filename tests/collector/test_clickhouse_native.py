"""Native-format ingest into a real ClickHouse: every value comes back as sent (varint lengths, NULLs, v1 and v2)."""

from __future__ import annotations

import pytest
from recorded import BASE_TS

from dnstrace.collector.store import native
from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.from_url import open_store
from dnstrace.wire.codec import decode_batch, encode_events
from dnstrace.wire.query import QuerySpec


def test_varint_matches_the_protocol():
    assert native.varint(0) == b"\x00"
    assert native.varint(127) == b"\x7f"
    assert native.varint(128) == b"\x80\x01"
    assert native.varint(300) == b"\xac\x02"
    assert native.varint(2**21) == b"\x80\x80\x80\x01"


def test_string_data_lays_out_rows_with_length_prefixes():
    import pyarrow as pa

    words = ["", "a", "x" * 200, "é" * 10_000]
    plain = pa.array(words + [None])
    expected = b"".join(native.varint(len(w.encode())) + w.encode() for w in words) + b"\x00"
    assert native.string_data(plain) == expected
    coded = pa.DictionaryArray.from_arrays(pa.array([3, 0, None, 2, 1, 3], pa.int32()), pa.array(words))
    rows = [words[3], words[0], None, words[2], words[1], words[3]]
    assert native.string_data(coded) == b"".join(
        native.varint(len((w or "").encode())) + (w or "").encode() for w in rows)


def _events(n: int) -> list[dict]:
    events = []
    for i in range(n):
        e = {"ts": BASE_TS + i, "kind": "dns" if i % 2 else "gai", "pid": i if i % 3 else None,
             "comm": "c" * (i % 300), "name": ("ñame-" * (i % 50)) or None, "latency_ns": i * 1000 if i % 4 else None,
             "server": None if i % 5 == 0 else f"10.0.0.{i % 7}", "rcode": "SERVFAIL" if i % 11 == 0 else None,
             "note": "z" * (20_000 if i == 7 else i)}
        events.append(e)
    return events


@pytest.mark.parametrize("version", [1, 2])
def test_every_value_round_trips(clickhouse, version):
    store = open_store(clickhouse.url_for(f"dnstrace_native_v{version}"))
    try:
        store.truncate()
        events = _events(400)
        for n in range(4):
            chunk = events[n * 100:(n + 1) * 100]
            batch = decode_batch(encode_events(chunk, version=version), version=version)
            assert store.insert(BatchKey("native-host", "boot", 1, n + 1), batch)
        _, rows = store.query(QuerySpec(limit=10_000))
        assert rows == [dict({k: v for k, v in e.items() if v is not None}, host="native-host") for e in events]
    finally:
        store.close()
