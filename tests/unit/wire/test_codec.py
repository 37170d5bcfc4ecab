"""dnstrace.wire.codec on its own: literal events in, literal columns out, hostile batches refused.

Expected values are written out here (what a stored row must hold), never computed
with the codec's own helpers.
"""

from __future__ import annotations

import msgpack
import pytest

from dnstrace.events import is_failed
from dnstrace.wire.codec import BatchError, decode_batch, encode_events, row_to_event

T = 1_767_225_600 * 10**9  # 2026-01-01: ingest refuses timestamps outside 2000..2200


@pytest.mark.parametrize("event,failed", [
    ({"kind": "gai", "error": "EAI_AGAIN"}, True),
    ({"kind": "gai", "error": None}, False),
    ({"kind": "dns", "rcode": "NOERROR"}, False),
    ({"kind": "dns", "rcode": "SERVFAIL"}, True),
    ({"kind": "dns", "rcode": "NXDOMAIN"}, True),
    ({"kind": "dns", "rcode": None}, False),
    ({"kind": "dns", "answered": False}, True),
    ({"kind": "dns", "answered": True, "rcode": "NOERROR"}, False),
    ({"kind": "dns", "answered": None}, False),
    ({"kind": "tcp", "result": "refused"}, True),
    ({"kind": "tcp", "result": "timeout"}, True),
    ({"kind": "tcp", "result": "reset"}, True),
    ({"kind": "tcp", "result": "established"}, False),
    ({"kind": "connect", "result": "unreachable"}, True),
    ({"kind": "connect", "result": "closed"}, False),
    ({"kind": "lookup", "error": "NOERROR"}, True),
    ({"kind": "lookup", "error": None}, False),
    ({"kind": "drop", "reason": "IP_RPFILTER"}, True),
    ({"kind": "conntrack"}, False),
    ({}, False),
])
def test_failed_is_the_documented_rule(event, failed):
    assert is_failed(event) is failed


EVENTS = [
    {"ts": T + 10, "kind": "dns", "pid": 7, "comm": "curl", "qname": "a.test", "qtype": "A",
     "rcode": "SERVFAIL", "server": "10.0.0.53", "latency_ns": 1500, "host": "ignored", "txid": 4660},
    {"ts": T + 11, "kind": "gai", "pid": 8, "name": "b.test", "latency_ns": 2 ** 63, "error": None},
    {"ts": T + 12, "kind": "drop", "reason": "IP_RPFILTER", "dport": "53"},
]


@pytest.mark.parametrize("version", [1, 2])
def test_round_trip_gives_the_literal_columns(version):
    batch = decode_batch(encode_events(EVENTS, version=version), expected_count=3, version=version)
    cols = batch.columns
    assert batch.count == 3
    assert cols["ts"] == [T + 10, T + 11, T + 12]
    assert cols["kind"] == ["dns", "gai", "drop"]
    assert cols["pid"] == [7, 8, None]
    assert cols["comm"] == ["curl", None, None]
    assert cols["qname"] == ["a.test", None, None]
    assert cols["rcode"] == ["SERVFAIL", None, None]
    assert cols["name"] == [None, "b.test", None]
    assert cols["reason"] == [None, None, "IP_RPFILTER"]
    # 2**63 does not fit a signed 64-bit column; "53" is not an int: both go to attrs
    assert cols["latency_ns"] == [1500, None, None]
    assert cols["dport"] == [None, None, None]
    assert cols["failed"] == [True, False, True]
    assert cols["attrs"] == ['{"txid":4660}', '{"latency_ns":9223372036854775808}', '{"dport":"53"}']
    assert batch.arrow_table().num_rows == 3


def test_largest_and_smallest_int64_stay_in_their_column():
    events = [{"ts": T + 1, "kind": "x", "latency_ns": 2 ** 63 - 1}, {"ts": T + 2, "kind": "x", "latency_ns": -(2 ** 63)}]
    cols = decode_batch(encode_events(events)).columns
    assert cols["latency_ns"] == [2 ** 63 - 1, -(2 ** 63)]
    assert cols["attrs"] == [None, None]


def test_bool_is_not_an_int_and_goes_to_attrs():
    cols = decode_batch(encode_events([{"ts": T + 1, "kind": "x", "pid": True, "comm": 5}])).columns
    assert cols["pid"] == [None] and cols["comm"] == [None]
    assert cols["attrs"] == ['{"pid":true,"comm":5}']


def test_attrs_of_bytes_sets_and_other_objects():
    cols = decode_batch(encode_events([{"ts": T + 1, "kind": "x", "raw": b"ab\xff", "s": (1, 2), "o": 1.5j}])).columns
    assert cols["attrs"] == ['{"raw":"ab\\ufffd","s":[1,2],"o":"1.5j"}']


def test_row_back_to_event():
    row = {"ts": 5, "kind": "dns", "qname": "a.test", "failed": True, "seq": 3, "boot_id": "b",
           "instance": "i", "pid": None, "attrs": '{"txid":7,"qname":"shadowed"}'}
    assert row_to_event(row) == {"ts": 5, "kind": "dns", "qname": "a.test", "txid": 7}
    # a stored attrs value that cannot be read is flagged, never an error (older stores may hold one)
    assert row_to_event({"ts": 1, "kind": "x", "attrs": "not json"}) == {"ts": 1, "kind": "x", "attrs_unreadable": True}
    assert row_to_event({"ts": 1, "kind": "x", "attrs": "[1]"}) == {"ts": 1, "kind": "x"}


@pytest.mark.parametrize("payload,needle", [
    (b"\xc1", "not a msgpack batch"),
    (msgpack.packb([1, 2]), "exactly 'n' and 'cols'"),
    (msgpack.packb({"n": 1, "cols": {}, "x": 1}), "exactly 'n' and 'cols'"),
    (msgpack.packb({"n": -1, "cols": {}}), "event count must be 0..1000000"),
    (msgpack.packb({"n": True, "cols": {}}), "event count must be"),
    (msgpack.packb({"n": 0, "cols": []}), "'cols' must be a map"),
    (msgpack.packb({"n": 0, "cols": {"bogus": []}}), "unknown columns: ['bogus']"),
])
def test_hostile_batches_are_refused(payload, needle):
    with pytest.raises(BatchError) as caught:
        decode_batch(payload)
    assert needle in str(caught.value)


def test_event_count_limits_are_exact():
    payload = encode_events([{"ts": T + 1, "kind": "x"}] * 3)
    assert decode_batch(payload, max_events=3).count == 3
    with pytest.raises(BatchError, match="event count must be 0..2"):
        decode_batch(payload, max_events=2)
    with pytest.raises(BatchError, match="envelope says 4 events, payload holds 3"):
        decode_batch(payload, expected_count=4)


def test_unsupported_version_is_refused():
    # 1 and 2: events; 3: events plus the agents' rollup rows (agent.ship = summary)
    with pytest.raises(BatchError, match="schema version 4 is not supported"):
        decode_batch(encode_events([]), version=4)
    with pytest.raises(BatchError, match="schema version 0 is not supported"):
        decode_batch(encode_events([]), version=0)


@pytest.mark.parametrize("version", [1, 2])
def test_empty_batch(version):
    batch = decode_batch(encode_events([], version=version), expected_count=0, version=version)
    assert batch.count == 0 and batch.columns["ts"] == []


def test_v1_required_and_mis_sized_columns():
    with pytest.raises(BatchError, match="column 'kind' is required"):
        decode_batch(msgpack.packb({"n": 1, "cols": {"ts": [T + 1]}}), version=1)
    with pytest.raises(BatchError, match="column 'ts' must be a list of 2 values"):
        decode_batch(msgpack.packb({"n": 2, "cols": {"ts": [T + 1], "kind": ["a", "b"]}}), version=1)


@pytest.mark.parametrize("attrs,needle", [
    ("[1]", "must be"), ("{bad}", "invalid JSON"), ("x", "must be"),
])
def test_v1_attrs_must_be_json_objects(attrs, needle):
    payload = msgpack.packb({"n": 1, "cols": {"ts": [T + 1], "kind": ["a"], "attrs": [attrs]}})
    with pytest.raises(BatchError, match=needle):
        decode_batch(payload, version=1)


def _v1_attrs(values) -> bytes:
    n = len(values)
    return msgpack.packb({"n": n, "cols": {"ts": [T + i for i in range(n)], "kind": ["a"] * n, "attrs": values}})


def _v2_attrs(values) -> bytes:
    n = len(values)
    obj = _v2([{"ts": T + i, "kind": "a", "attrs_source": i} for i in range(n)])
    obj["cols"]["attrs"] = {"d": values, "i": b"".join(i.to_bytes(4, "little") for i in range(n))}
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("pack", [_v1_attrs, _v2_attrs], ids=["v1", "v2"])
def test_attrs_values_that_are_json_only_when_joined_are_refused(pack):
    # Each starts with { and ends with }; joined by a comma they read as two other objects.
    with pytest.raises(BatchError, match="each 'attrs' value must be one JSON object"):
        decode_batch(pack(['{"a":1},{"b":"}', '{","c":2}']), version=1 if pack is _v1_attrs else 2)


@pytest.mark.parametrize("pack", [_v1_attrs, _v2_attrs], ids=["v1", "v2"])
def test_attrs_json_that_python_writes_is_accepted(pack):
    # json.dumps writes NaN, Infinity and lone surrogate escapes; agents' batches holding them are kept.
    values = ['{"r":NaN}', '{"r":-Infinity}', '{"s":"\\ud800"}', '{"a":[1,{"b":null}]}']
    decoded = decode_batch(pack(values), version=1 if pack is _v1_attrs else 2)
    assert decoded.arrays["attrs"].to_pylist() == values


# --- version 2 columns, tampered ----------------------------------------------

def _v2(events):
    return msgpack.unpackb(encode_events(events, version=2), raw=False)


def _tampered(change) -> bytes:
    obj = _v2([{"ts": T + 1, "kind": "dns", "pid": 7, "comm": "curl"}, {"ts": T + 2, "kind": "gai"}])
    change(obj["cols"])
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize("change,needle", [
    (lambda c: c["pid"].pop("v"), "column 'pid' must be a map with 'v' (and 'm')"),
    (lambda c: c["pid"].update(x=1), "column 'pid' must be a map with 'v' (and 'm')"),
    (lambda c: c.update(pid=[1, 2]), "column 'pid' must be a map with 'v' (and 'm')"),
    (lambda c: c["pid"].update(v=c["pid"]["v"][:-1]), "column 'pid' must hold 2 int64 values"),
    (lambda c: c["comm"].update(d="curl"), "'d' must be a list of at most 2 strings"),
    (lambda c: c["comm"].update(d=["a", "b", "c"]), "'d' must be a list of at most 2 strings"),
    (lambda c: c["comm"].update(d=[1]), "'d' must be a list of at most 2 strings"),
    (lambda c: c["comm"].update(i=c["comm"]["i"][:-1]), "column 'comm' must hold 2 int32 codes"),
    (lambda c: c["comm"].update(i=b"\x05\x00\x00\x00\xff\xff\xff\xff"), "codes outside its dictionary"),
    (lambda c: c["comm"].pop("i"), "must be a map with 'd' and 'i'"),
    (lambda c: c.update(failed=b"\x01"), "column 'failed' must hold 2 flag bytes"),
    (lambda c: c.pop("kind"), "column 'kind' is required"),
    (lambda c: c["kind"].update(i=b"\xff\xff\xff\xff\x00\x00\x00\x00"), "column 'kind' must not hold nulls"),
])
def test_v2_tampered_columns_are_refused(change, needle):
    with pytest.raises(BatchError) as caught:
        decode_batch(_tampered(change))
    assert needle in str(caught.value)


def test_v2_one_word_dictionary_for_an_empty_batch_is_allowed():
    obj = {"n": 0, "cols": {"ts": {"v": b""}, "kind": {"d": ["x"], "i": b""}}}
    assert decode_batch(msgpack.packb(obj, use_bin_type=True)).count == 0
    obj["cols"]["kind"]["d"] = ["x", "y"]
    with pytest.raises(BatchError, match="at most 0 strings"):
        decode_batch(msgpack.packb(obj, use_bin_type=True))


def test_msgpack_extension_types_are_refused():
    payload = msgpack.packb({"n": 0, "cols": {"ts": msgpack.ExtType(1, b"x")}}, use_bin_type=True)
    with pytest.raises(BatchError, match="not a msgpack batch"):
        decode_batch(payload)


def test_v1_refuses_binary_values():
    payload = msgpack.packb({"n": 1, "cols": {"ts": [T + 1], "kind": [b"x"]}}, use_bin_type=True)
    with pytest.raises(BatchError, match="not a msgpack batch"):
        decode_batch(payload, version=1)


def test_unknown_columns_named_at_most_five():
    cols = {f"bogus{i}": [] for i in range(6)}
    with pytest.raises(BatchError) as caught:
        decode_batch(msgpack.packb({"n": 0, "cols": cols}))
    assert str(caught.value) == "unknown columns: ['bogus0', 'bogus1', 'bogus2', 'bogus3', 'bogus4']"


def test_stream_window_is_128_batches_or_64_mib():
    from dnstrace.wire import codec
    assert (codec.STREAM_WINDOW_BATCHES, codec.STREAM_WINDOW_BYTES) == (128, 64 * 1024 * 1024)
