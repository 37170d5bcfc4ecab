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


def test_dictionaries_small_and_large_lay_out_null_rows_as_empty_strings():
    import pyarrow as pa

    def laid(values):
        return b"".join(b"\x00" if v is None else native.varint(len(v.encode())) + v.encode() for v in values)

    words = [f"w{i}-" * (i % 7) for i in range(100)]  # more entries than the Python path takes: Arrow lays them out
    big = pa.DictionaryArray.from_arrays(pa.array([99, None, 0, 64, 65, 3], pa.int32()), pa.array(words))
    assert native.string_data(big) == laid([words[99], None, words[0], words[64], words[65], words[3]])
    small = pa.DictionaryArray.from_arrays(pa.array([1, 2, None, 0], pa.int32()), pa.array(["a", None, "bé"]))
    assert native.string_data(small) == laid([None, "bé", None, "a"])
    assert native.string_data(small.slice(1, 2)) == laid(["bé", None])


def test_fixed_width_columns_honour_the_array_offset():
    import pyarrow as pa

    ints = pa.array([1, None, 3, 2**40], pa.int64()).slice(1, 3)
    nulls, values = native.column_parts(ints, "Nullable(Int64)")
    assert bytes(native.piece(nulls)) == b"\x01\x00\x00"
    assert bytes(native.piece(values))[8:] == (3).to_bytes(8, "little") + (2**40).to_bytes(8, "little")
    nulls, flags = native.column_parts(pa.array([True, False, True]).slice(1), "UInt8")
    assert nulls is None and bytes(native.piece(flags)) == b"\x00\x01"


def test_blocks_come_out_in_the_tables_sort_order():
    """kind and host compare as ClickHouse compares String (bytewise, a prefix first), then ts."""
    import pyarrow as pa

    columns = [("kind", "String"), ("host", "String"), ("ts", "Int64"), ("n", "Int64")]
    rows = []
    chunks = []
    for host, kinds in (("b", ["dns", "gai", "dns", "Z"]), ("a", ["gai", "é", "dns"]), ("ab", ["dns", "dns"])):
        chunk = native.Chunk(columns, {1: host})
        ts = [((len(rows) + j) * 7919) % 13 for j in range(len(kinds))]
        n = list(range(len(rows), len(rows) + len(kinds)))
        rows += [(k, host, t, i) for k, t, i in zip(kinds, ts, n, strict=True)]
        chunk.add(0, pa.array(kinds).dictionary_encode(), sort_key=True)
        chunk.add(2, pa.array(ts, pa.int64()), sort_key=True)
        chunk.add(3, pa.array(n, pa.int64()))
        chunk.rows = len(kinds)
        chunks.append(chunk)
    expected = sorted(rows, key=lambda r: (r[0].encode(), r[1].encode(), r[2]))
    order = native.sort_order(chunks, (0, 1, 2)).to_pylist()
    assert [rows[i] for i in order] == expected
    pieces = native.block(chunks, (0, 1, 2))
    n_column = b"".join(bytes(p) for p in pieces).split(native.varint(1) + b"n" + native.varint(5) + b"Int64")[1]
    assert n_column == b"".join(r[3].to_bytes(8, "little") for r in expected)


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
