"""dnstrace.wire.codec at its limits: envelope ids, value ranges, packed layout bytes, attrs nesting, rollup rows.

Every expected value is written out (bytes, strings, numbers), never produced by the codec itself.
"""

from __future__ import annotations

import msgpack
import pyarrow as pa
import pytest

from dnstrace.wire.codec import (
    BatchError,
    attrs_depth_ok,
    check_envelope,
    decode_batch,
    encode_events,
    encode_rollup_batch,
)

T = 1_767_225_600 * 10**9  # 2026-01-01
MINUTE = 60 * 10**9
TS_MIN = 946_684_800 * 10**9  # 2000-01-01
TS_MAX = 7_258_118_400 * 10**9  # 2200-01-01


def _v1(n, **cols):
    return msgpack.packb({"n": n, "cols": cols}, use_bin_type=True)


def _packed(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- envelope ids -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host,boot", [("h", "b"), ("h" * 255, "b" * 64), ("node-1.example", "0b1c-2d")])
def test_envelope_ids_within_limits_pass(host, boot):
    assert check_envelope(host, boot) is None


@pytest.mark.parametrize("host,boot,message", [
    ("", "b", "host_id must be 1..255 characters"),
    ("h" * 256, "b", "host_id must be 1..255 characters"),
    ("h", "", "boot_id must be 1..64 characters"),
    ("h", "b" * 65, "boot_id must be 1..64 characters"),
    ("a\x00b", "b", "host_id holds control characters or surrounding blanks"),
    ("h", "b\x1b[31m", "boot_id holds control characters or surrounding blanks"),
    ("a\u202eb", "b", "host_id holds control characters or surrounding blanks"),
    (" h", "b", "host_id holds control characters or surrounding blanks"),
    ("h", "b ", "boot_id holds control characters or surrounding blanks"),
])
def test_envelope_ids_out_of_limits_are_refused(host, boot, message):
    with pytest.raises(BatchError) as caught:
        check_envelope(host, boot)
    assert str(caught.value) == message


# --- the packed (version 2) layout, byte for byte -----------------------------------------------------------

def test_v2_layout_bytes():
    events = [{"ts": 1, "kind": "dns", "pid": 7, "comm": "curl"},
              {"ts": 2, "kind": "gai", "comm": "curl"},
              {"ts": 3, "kind": "dns", "host": "ignored"}]
    obj = msgpack.unpackb(encode_events(events), raw=False)
    assert obj["n"] == 3
    cols = obj["cols"]
    # columns no event has are left out (read back as all null); ts and kind are always there
    assert set(cols) == {"ts", "kind", "pid", "comm", "failed"}
    assert cols["ts"] == {"v": b"\x01" + b"\x00" * 7 + b"\x02" + b"\x00" * 7 + b"\x03" + b"\x00" * 7}
    assert cols["pid"] == {"v": b"\x07" + b"\x00" * 7 + b"\x00" * 16, "m": b"\x01\x00\x00"}
    assert cols["kind"] == {"d": ["dns", "gai"], "i": b"\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"}
    assert cols["comm"] == {"d": ["curl"], "i": b"\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"}
    assert cols["failed"] == b"\x00\x00\x00"


def test_v2_negative_ints_are_little_endian_twos_complement():
    obj = msgpack.unpackb(encode_events([{"ts": T, "kind": "x", "pid": -2}]), raw=False)
    assert obj["cols"]["pid"] == {"v": b"\xfe" + b"\xff" * 7}


def test_v1_layout_is_plain_lists():
    obj = msgpack.unpackb(encode_events([{"ts": 5, "kind": "x", "name": None, "odd": None, "e": 1}], version=1),
                          raw=False)
    assert obj["cols"]["ts"] == [5] and obj["cols"]["kind"] == ["x"]
    assert obj["cols"]["name"] == [None]
    assert obj["cols"]["attrs"] == ['{"e":1}']  # a field holding None is not carried in attrs
    assert obj["cols"]["failed"] == [False]


def test_attrs_of_bytearray_and_frozenset():
    cols = decode_batch(encode_events([{"ts": T, "kind": "x", "b": bytearray(b"hi"), "f": frozenset({3})}])).columns
    assert cols["attrs"] == ['{"b":"hi","f":[3]}']


def test_v2_decoded_types_and_nulls():
    batch = decode_batch(encode_events([{"ts": T, "kind": "dns", "pid": 7, "rcode": "SERVFAIL"},
                                        {"ts": T + 1, "kind": "gai"}]))
    table = batch.arrow_table()
    assert table.column_names[:4] == ["ts", "kind", "pid", "tid"] and table.column_names[-2:] == ["failed", "attrs"]
    assert table.schema.field("ts").type == pa.int64()
    assert table.schema.field("tid").type == pa.int64()
    assert table.schema.field("failed").type == pa.bool_()
    assert table.schema.field("qname").type == pa.string()
    assert batch.columns["pid"] == [7, None]
    assert batch.columns["tid"] == [None, None]
    assert batch.columns["qname"] == [None, None]
    assert batch.columns["failed"] == [True, False]
    assert batch.rollups is None and batch.rollup_count == 0 and batch.rollup_arrays() == {}
    assert batch.max_ts() == T + 1


def test_columns_are_rebuilt_after_drop_lists():
    batch = decode_batch(encode_events([{"ts": T, "kind": "x"}]))
    first = batch.columns
    assert batch.columns is first  # built once
    batch.drop_lists()
    again = batch.columns
    assert again is not first and again["kind"] == ["x"]


def test_v1_columns_are_the_decoded_lists():
    batch = decode_batch(encode_events([{"ts": T, "kind": "x", "pid": 3}], version=1), version=1)
    assert batch.columns["pid"] == [3] and batch.columns["tid"] == [None]
    assert batch.arrow_table().schema.field("tid").type == pa.int64()
    assert batch.arrow_table().schema.field("pid").type == pa.int64()


def test_empty_batch_has_no_newest_time():
    assert decode_batch(encode_events([])).max_ts() is None


# --- value ranges ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ts", [TS_MIN, TS_MAX - 1])
def test_timestamps_at_the_edges_of_2000_to_2200_pass(version, ts):
    assert decode_batch(encode_events([{"ts": ts, "kind": "x"}], version=version), version=version).columns["ts"] == [ts]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ts", [TS_MIN - 1, TS_MAX])
def test_timestamps_outside_2000_to_2200_are_refused(version, ts):
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_events([{"ts": T, "kind": "x"}, {"ts": ts, "kind": "x"}], version=version), version=version)
    low, high = min(T, ts), max(T, ts)
    assert str(caught.value) == f"'ts' must be a time in ns between 2000 and 2200 (got {low}..{high})"


@pytest.mark.parametrize("version", [1, 2])
def test_text_fields_up_to_4096_characters(version):
    ok = decode_batch(encode_events([{"ts": T, "kind": "x", "qname": "é" * 4096}], version=version), version=version)
    assert ok.columns["qname"] == ["é" * 4096]  # characters, not bytes
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_events([{"ts": T, "kind": "x", "qname": "a" * 4097}, {"ts": T, "kind": "x"}],
                                   version=version), version=version)
    assert str(caught.value) == "column 'qname' holds a value of 4097 characters (limit 4096)"


@pytest.mark.parametrize("version", [1, 2])
def test_attrs_up_to_65536_characters(version):
    filler = 65536 - len('{"a":""}')
    ok = decode_batch(encode_events([{"ts": T, "kind": "x", "a": "y" * filler}], version=version), version=version)
    assert len(ok.columns["attrs"][0]) == 65536
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_events([{"ts": T, "kind": "x", "a": "y" * (filler + 1)}], version=version),
                     version=version)
    assert str(caught.value) == "column 'attrs' holds a value of 65537 characters (limit 65536)"


def test_long_attrs_do_not_pass_as_a_text_field():
    # attrs has its own (larger) limit; every other text column keeps 4096
    with pytest.raises(BatchError, match="column 'kind' holds a value of 4097 characters"):
        decode_batch(encode_events([{"ts": T, "kind": "k" * 4097}]))


def test_v1_int_column_of_floats_is_refused():
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, ts=[T], kind=["x"], pid=[1.5]), version=1)
    assert str(caught.value) == "column 'pid' holds double values, not integers"


def test_v1_wrong_types_are_refused_with_the_column_named():
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, ts=[T], kind=[5]), version=1)
    assert str(caught.value).startswith("column 'kind' holds values of the wrong type or range (")
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, ts=[T], kind=["x"], pid=[2**63]), version=1)
    assert str(caught.value) == "column 'pid' holds values of the wrong type or range (OverflowError)"
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, ts=[T], kind=["x"], pid=["7"]), version=1)
    assert str(caught.value) == "column 'pid' holds string values, not integers"


def test_v1_required_columns_must_not_hold_nulls():
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(2, ts=[T, None], kind=["x", "x"]), version=1)
    assert str(caught.value) == "column 'ts' must not hold nulls"
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, ts=[T], kind=[None]), version=1)
    assert str(caught.value) == "column 'kind' must not hold nulls"


def test_v1_missing_ts_is_required():
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(1, kind=["x"]), version=1)
    assert str(caught.value) == "column 'ts' is required"


def test_v1_optional_column_missing_is_all_null_and_bools_decode():
    batch = decode_batch(_v1(2, ts=[T, T], kind=["x", "y"], failed=[True, False]), version=1)
    assert batch.columns["failed"] == [True, False]
    assert batch.arrow_table().column("pid").to_pylist() == [None, None]


# --- version 2, tampered -------------------------------------------------------------------------------------

def _base():
    return msgpack.unpackb(encode_events([{"ts": T, "kind": "dns", "pid": 7, "comm": "curl"},
                                          {"ts": T + 1, "kind": "gai"}]), raw=False)


def test_v2_presence_flags_make_nulls_and_values_stay():
    obj = _base()
    assert obj["cols"]["pid"]["m"] == b"\x01\x00"
    obj["cols"]["pid"] = {"v": (7).to_bytes(8, "little") + (9).to_bytes(8, "little"), "m": b"\x00\x01"}
    assert decode_batch(_packed(obj)).columns["pid"] == [None, 9]
    obj["cols"]["pid"] = {"v": (7).to_bytes(8, "little") + (9).to_bytes(8, "little")}
    assert decode_batch(_packed(obj)).columns["pid"] == [7, 9]


def test_v2_flags_other_than_one_count_as_true():
    obj = _base()
    obj["cols"]["failed"] = b"\x02\x00"
    assert decode_batch(_packed(obj)).columns["failed"] == [True, False]


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(ts={"v": c["ts"]["v"], "m": b"\x01\x00"}), "column 'ts' must not hold nulls"),
    (lambda c: c["pid"].update(m=b"\x01"), "column 'pid' must hold 2 flag bytes"),
    (lambda c: c["pid"].update(m="ab"), "column 'pid' must hold 2 flag bytes"),
    (lambda c: c["pid"].update(v="x" * 16), "column 'pid' must hold 2 int64 values"),
    (lambda c: c["comm"].update(i="x" * 8), "column 'comm' must hold 2 int32 codes"),
    (lambda c: c["comm"].update(x=1), "column 'comm' must be a map with 'd' and 'i'"),
    (lambda c: c.update(comm=["curl", None]), "column 'comm' must be a map with 'd' and 'i'"),
    (lambda c: c.update(failed=[True, False]), "column 'failed' must hold 2 flag bytes"),
    (lambda c: c.pop("ts"), "column 'ts' is required"),
])
def test_v2_tampered_columns_give_exact_messages(change, message):
    obj = _base()
    change(obj["cols"])
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed(obj))
    assert str(caught.value) == message


def test_v2_dictionary_may_hold_as_many_words_as_events():
    obj = _base()
    obj["cols"]["comm"] = {"d": ["a", "b"], "i": b"\x01\x00\x00\x00\x00\x00\x00\x00"}
    assert decode_batch(_packed(obj)).columns["comm"] == ["b", "a"]


def test_v2_bins_larger_than_the_payload_cannot_appear_and_v1_takes_none():
    obj = _base()
    assert decode_batch(_packed(obj), version=2).count == 2
    with pytest.raises(BatchError, match="not a msgpack batch"):
        decode_batch(_packed(obj), version=1)


# --- attrs shape and nesting ------------------------------------------------------------------------------

def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_attrs_depth_limit_is_32_levels():
    assert attrs_depth_ok([]) is True
    assert attrs_depth_ok([_nested(32)]) is True
    assert attrs_depth_ok([_nested(33)]) is False
    assert attrs_depth_ok(['{"a":[1,{"b":[]}]}', _nested(32)]) is True
    assert attrs_depth_ok(['{"a":1}', _nested(33)]) is False
    # brackets inside strings are text, not nesting
    assert attrs_depth_ok(['{"a":"' + "[{" * 40 + '"}']) is True
    assert attrs_depth_ok(['{"a":"\\"[{"}']) is True


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("check_json", [True, False])
def test_attrs_with_many_brackets_are_judged_by_their_nesting(version, check_json):
    """Only values holding more than 32 brackets go through the nesting check: wide and in-string ones still pass,
    and one too deep among shallow ones is still found."""
    wide = {"ts": T, "kind": "x", "list": [[1]] * 40}  # 41 brackets, depth 3
    text = {"ts": T, "kind": "x", "s": "[{" * 40}  # 80 brackets inside a string, depth 1
    exact = {"ts": T, "kind": "x", "a": 1}
    inner: dict = exact
    for _ in range(31):  # the attrs object plus 31 levels: 32
        inner["a"] = {}
        inner = inner["a"]
    batch = [wide, text, exact, {"ts": T, "kind": "x", "b": 2}]
    decoded = decode_batch(encode_events(batch, version=version), version=version, check_attrs_json=check_json)
    assert decoded.count == 4
    inner["a"] = {}  # 33 levels
    with pytest.raises(BatchError, match="nests deeper than 32"):
        decode_batch(encode_events(batch, version=version), version=version, check_attrs_json=check_json)


@pytest.mark.parametrize("version", [1, 2])
def test_attrs_nesting_deeper_than_32_is_refused(version):
    deep = {"ts": T, "kind": "x", "a": 1}
    inner: dict = {}
    node = inner
    for _ in range(30):  # the attrs object and inner are the first two levels
        node["a"] = {}
        node = node["a"]
    deep["a"] = inner
    assert decode_batch(encode_events([deep], version=version), version=version).count == 1
    node["a"] = {}
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_events([deep], version=version), version=version)
    assert str(caught.value) == "an 'attrs' value nests deeper than 32 levels"


def test_attrs_json_check_can_be_left_to_the_store():
    obj = _base()
    obj["cols"]["attrs"] = {"d": ["{not json}"], "i": b"\x00\x00\x00\x00\xff\xff\xff\xff"}
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed(obj))
    assert str(caught.value) == "'attrs' holds invalid JSON"
    assert decode_batch(_packed(obj), check_attrs_json=False).columns["attrs"] == ["{not json}", None]


@pytest.mark.parametrize("text", ['x{"a":1}', '{"a":1}x', '[{"a":1}]'])
def test_attrs_must_start_and_end_as_an_object(text):
    obj = _base()
    obj["cols"]["attrs"] = {"d": [text], "i": b"\x00\x00\x00\x00\x00\x00\x00\x00"}
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed(obj), check_attrs_json=False)
    assert str(caught.value) == "each 'attrs' value must be one JSON object"


def test_two_objects_in_one_attrs_value_are_refused():
    with pytest.raises(BatchError) as caught:
        decode_batch(_v1(2, ts=[T, T], kind=["x", "x"], attrs=['{"a":1},{"b":2}', None]), version=1)
    assert str(caught.value) == "each 'attrs' value must be one JSON object"


# --- envelope map -------------------------------------------------------------------------------------------

def test_batch_map_keys_per_version():
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed({"n": 0, "cols": {}, "rollups": {}}), version=2)
    assert str(caught.value) == "batch must be a map with exactly 'n' and 'cols'"
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed({"n": 0, "cols": {}, "x": {}}), version=3)
    assert str(caught.value) == "batch must be a map with exactly 'n' and 'cols' (and 'rollups')"
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed({"n": 0}), version=3)
    assert str(caught.value) == "batch must be a map with exactly 'n' and 'cols' (and 'rollups')"


def test_event_count_zero_and_the_maximum_pass():
    assert decode_batch(encode_events([]), max_events=0).count == 0
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_events([{"ts": T, "kind": "x"}]), max_events=0)
    assert str(caught.value) == "event count must be 0..0"
    assert decode_batch(encode_events([{"ts": T, "kind": "x"}]), expected_count=1).count == 1


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_supported_version_decodes(version):
    assert decode_batch(encode_events([{"ts": T, "kind": "x"}], version=1 if version == 1 else 2),
                        version=version).columns["kind"] == ["x"]


# --- version 3: rollup rows ---------------------------------------------------------------------------------

def _rows(*rows):
    names = ("minute", "kind", "comm", "container", "pod", "namespace", "server", "rcode", "error", "reason",
             "qtype", "failed", "lat_bucket", "events", "latency_max")
    return {name: [row.get(name) for row in rows] for name in names}


ROW = {"minute": T, "kind": "gai", "comm": "curl", "failed": True, "lat_bucket": 100, "events": 3,
       "latency_max": 1_500}


def test_rollup_rows_round_trip():
    rows = _rows(ROW, {"minute": T + MINUTE, "kind": "dns", "failed": False, "events": 1})
    batch = decode_batch(encode_rollup_batch([{"ts": T + 5, "kind": "x"}], rows), version=3)
    assert batch.count == 1 and batch.rollup_count == 2
    got = {name: array.to_pylist() for name, array in batch.rollup_arrays().items()}
    assert got["minute"] == [T, T + MINUTE]
    assert got["kind"] == ["gai", "dns"]
    assert got["comm"] == ["curl", None]
    assert got["server"] == [None, None]
    assert got["failed"] == [True, False]
    assert got["lat_bucket"] == [100, None]
    assert got["events"] == [3, 1]
    assert got["latency_max"] == [1_500, None]
    assert batch.max_ts() == T + MINUTE  # the newest rollup minute is newer than the one event


def test_rollup_layout_leaves_out_empty_optional_columns():
    obj = msgpack.unpackb(encode_rollup_batch([], _rows({"minute": T, "kind": "gai", "failed": False, "events": 2})),
                          raw=False)
    assert obj["n"] == 0 and obj["cols"] == {"ts": {"v": b""}, "kind": {"d": [], "i": b""}}
    assert obj["rollups"]["n"] == 1
    assert set(obj["rollups"]["cols"]) == {"minute", "kind", "failed", "events"}
    assert obj["rollups"]["cols"]["events"] == {"v": b"\x02" + b"\x00" * 7}


def test_rollups_without_events_give_the_newest_minute():
    batch = decode_batch(encode_rollup_batch([], _rows(ROW)), version=3)
    assert (batch.count, batch.rollup_count, batch.max_ts()) == (0, 1, T)


def test_empty_rollup_section():
    batch = decode_batch(encode_rollup_batch([{"ts": T, "kind": "x"}], _rows()), version=3)
    assert batch.rollup_count == 0 and batch.max_ts() == T
    assert batch.rollups is not None and batch.rollup_arrays()["minute"].to_pylist() == []


@pytest.mark.parametrize("bucket", [0, 512, None])
def test_rollup_buckets_0_to_512_pass(bucket):
    batch = decode_batch(encode_rollup_batch([], _rows({**ROW, "lat_bucket": bucket})), version=3)
    assert batch.rollup_arrays()["lat_bucket"].to_pylist() == [bucket]


@pytest.mark.parametrize("buckets", [[-1], [513], [0, 513], [-1, 512]])
def test_rollup_buckets_outside_0_to_512_are_refused(buckets):
    rows = _rows(*({**ROW, "lat_bucket": b} for b in buckets))
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_rollup_batch([], rows), version=3)
    assert str(caught.value) == "rollup latency buckets must be 0..512"


def test_rollup_with_some_buckets_missing_checks_the_rest():
    rows = _rows({**ROW, "lat_bucket": None}, {**ROW, "lat_bucket": 600})
    with pytest.raises(BatchError, match="buckets must be 0..512"):
        decode_batch(encode_rollup_batch([], rows), version=3)
    rows = _rows({**ROW, "lat_bucket": None}, {**ROW, "lat_bucket": 5})
    assert decode_batch(encode_rollup_batch([], rows), version=3).rollup_count == 2


def test_rollup_rows_count_at_least_one_event():
    ok = decode_batch(encode_rollup_batch([], _rows({**ROW, "events": 1}, {**ROW, "events": 2})), version=3)
    assert ok.rollup_arrays()["events"].to_pylist() == [1, 2]
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_rollup_batch([], _rows({**ROW, "events": 2}, {**ROW, "events": 0})), version=3)
    assert str(caught.value) == "a rollup row must count at least one event"


@pytest.mark.parametrize("minute", [T + 1, T - 1, T + MINUTE // 2])
def test_rollup_minutes_must_be_whole(minute):
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_rollup_batch([], _rows(ROW, {**ROW, "minute": minute})), version=3)
    assert str(caught.value) == "rollup minutes must be whole minutes (ns)"


@pytest.mark.parametrize("section,message", [
    ([], "'rollups' must be a map with exactly 'n' and 'cols'"),
    ({"n": 0}, "'rollups' must be a map with exactly 'n' and 'cols'"),
    ({"n": 0, "cols": {}, "x": 1}, "'rollups' must be a map with exactly 'n' and 'cols'"),
    ({"n": -1, "cols": {}}, "rollup row count must be 0..1000000"),
    ({"n": True, "cols": {}}, "rollup row count must be 0..1000000"),
    ({"n": 0, "cols": []}, "'rollups' holds unknown columns"),
    ({"n": 0, "cols": {"ts": {"v": b""}}}, "'rollups' holds unknown columns"),
    ({"n": 0, "cols": {"kind": {"d": [], "i": b""}, "failed": b"", "events": {"v": b""}}},
     "column 'minute' is required"),
])
def test_hostile_rollup_sections_are_refused(section, message):
    obj = {"n": 0, "cols": {"ts": {"v": b""}, "kind": {"d": [], "i": b""}}, "rollups": section}
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed(obj), version=3)
    assert str(caught.value) == message


def test_rollup_row_count_limit_is_max_events():
    rows = _rows(ROW, ROW)
    assert decode_batch(encode_rollup_batch([], rows), version=3, max_events=2).rollup_count == 2
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_rollup_batch([], rows), version=3, max_events=1)
    assert str(caught.value) == "rollup row count must be 0..1"


def test_rollup_required_columns_must_not_hold_nulls():
    with pytest.raises(BatchError) as caught:
        decode_batch(encode_rollup_batch([], _rows({**ROW, "kind": None})), version=3)
    assert str(caught.value) == "column 'kind' must not hold nulls"


def test_ints_just_outside_int64_go_to_attrs():
    cols = decode_batch(encode_events([{"ts": T, "kind": "x", "pid": -(2**63) - 1, "tid": 2**63}])).columns
    assert (cols["pid"], cols["tid"]) == ([None], [None])
    assert cols["attrs"] == ['{"pid":-9223372036854775809,"tid":9223372036854775808}']


def test_default_layout_is_version_2_without_rollups():
    # what agents send unless shipping summaries; a rollup section needs version 3 said out loud
    payload = _packed({"n": 0, "cols": {"ts": {"v": b""}, "kind": {"d": [], "i": b""}}, "rollups": {"n": 0, "cols": {}}})
    with pytest.raises(BatchError) as caught:
        decode_batch(payload)
    assert str(caught.value) == "batch must be a map with exactly 'n' and 'cols'"
    assert msgpack.unpackb(encode_events([{"ts": 1, "kind": "x"}]), raw=False)["cols"]["ts"] == {"v": b"\x01" + b"\x00" * 7}


def test_summary_batches_are_tagged_with_version_3():
    # the version agents put on the envelope of a summary batch: one the decoder takes rollups with
    from dnstrace.wire.codec import ROLLUP_SCHEMA_VERSION

    assert ROLLUP_SCHEMA_VERSION == 3
    batch = decode_batch(encode_rollup_batch([], _rows(ROW)), version=ROLLUP_SCHEMA_VERSION)
    assert batch.rollup_count == 1


@pytest.mark.parametrize("obj", [{1: 0, "n": 0, "cols": {}}, {"n": 0, "cols": {7: {"v": b""}}}])
def test_map_keys_must_be_strings(obj):
    with pytest.raises(BatchError) as caught:
        decode_batch(_packed(obj))
    assert str(caught.value) == "not a msgpack batch: ValueError"
