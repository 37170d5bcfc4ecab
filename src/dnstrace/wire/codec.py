"""Event batches on the wire and in the spool: msgpack columnar, validated into typed Arrow columns.

An agent turns a list of event dicts into one msgpack map ``{"n": N, "cols": {...}}``
holding the stored columns (``COLUMNS``) plus ``attrs``: per event, a JSON object of
every other field (kind-specific fields, lists, dicts), so new event kinds need no
collector change. The agent also computes ``failed`` (``events.is_failed``: did this event
go wrong?) so stores and queries share one definition. Layouts (the envelope's schema version):

- version 1: one msgpack list of N values per column (``None`` = missing);
- version 2 (what agents send): packed little-endian buffers the collector wraps as
  Arrow arrays without a per-value Python loop: int columns ``{"v": N*int64,
  "m": N bytes 0/1 present}`` ("m" omitted when all present); string columns
  dictionary-encoded ``{"d": [distinct strings], "i": N*int32 index, -1 = missing}``;
  ``failed`` N bytes 0/1. A column missing from "cols" is all null.
- version 3 (``agent.ship = summary``): version 2 plus ``"rollups": {"n": M, "cols":
  {...}}``, the agent's per-interval rollup rows (``rollup.ROW_COLUMNS``) in the same
  packed layout; an older collector refuses the version and the agent keeps the batch.

The collector decodes with ``decode_batch``: any malformed input raises
``BatchError`` (the server turns it into a gRPC error status); nothing is half-decoded.
"""

from __future__ import annotations

import json
import re
import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from dnstrace.events import is_failed

SCHEMA_VERSION = 2
SUPPORTED_VERSIONS = (1, 2, 3)
ROLLUP_SCHEMA_VERSION = 3  # version 2 plus agent-made rollup rows (``agent.ship = summary``)

# Stored columns: (name, type). int = signed 64-bit, str = text, bool = boolean.
# ``ts`` and ``kind`` must be present on every event; the rest may be null.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "int"),
    ("kind", "str"),
    ("pid", "int"),
    ("tid", "int"),
    ("comm", "str"),
    ("container", "str"),
    ("pod", "str"),
    ("namespace", "str"),
    ("name", "str"),
    ("qname", "str"),
    ("qtype", "str"),
    ("server", "str"),
    ("latency_ns", "int"),
    ("error", "str"),
    ("rcode", "str"),
    ("reason", "str"),
    ("daddr", "str"),
    ("dport", "int"),
    ("rule", "str"),
    ("severity", "str"),
    ("failed", "bool"),
    ("attrs", "str"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
COLUMN_TYPES = dict(COLUMNS)
# Fields of an event that become columns (``host`` comes from the batch envelope).
EVENT_COLUMN_FIELDS = tuple(n for n in COLUMN_NAMES if n not in ("failed", "attrs"))
# Ingest stream flow control, shared by the agent's shipper (unacknowledged batches it sends ahead) and the
# collector (batches of one stream it decodes ahead of their acks). The collector commits in groups of
# >= 2 DuckDB row groups (see ``store.Store``), so one agent must keep more than that in flight for decoding
# to overlap writing; the byte limit bounds the memory a stream holds when batches are big.
STREAM_WINDOW_BATCHES = 128
STREAM_WINDOW_BYTES = 64 << 20
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# What ingest stores (a batch outside these is refused, logged and counted): timestamps 2000-01-01 ..
# 2200-01-01 (in ns), so retention can expire every row; text fields up to MAX_FIELD_CHARS characters,
# attrs up to MAX_ATTRS_CHARS and MAX_ATTRS_DEPTH levels of nesting (so every reader can parse it back);
# host ids printable, 1..MAX_HOST_ID_CHARS.
TS_MIN_NS = 946_684_800 * 10**9
TS_MAX_NS = 7_258_118_400 * 10**9
MAX_FIELD_CHARS = 4096
MAX_ATTRS_CHARS = 64 << 10
MAX_ATTRS_DEPTH = 32
MAX_HOST_ID_CHARS = 255
MAX_BOOT_ID_CHARS = 64
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_JSON_INNERMOST = re.compile(r"[\[{][^\[\]{}\n]*[\]}]")
_JSON_OPENERS = re.compile(r"[\[{]")


class BatchError(ValueError):
    """The batch is malformed: wrong structure, types or sizes."""


def check_envelope(host_id: str, boot_id: str) -> None:
    """Host and boot ids are stored and printed: bounded, and no control or bidi characters."""
    for name, value, limit in (("host_id", host_id, MAX_HOST_ID_CHARS), ("boot_id", boot_id, MAX_BOOT_ID_CHARS)):
        if not value or len(value) > limit:
            raise BatchError(f"{name} must be 1..{limit} characters")
        if _CONTROL_CHARS.search(value) or value != value.strip():
            raise BatchError(f"{name} holds control characters or surrounding blanks")


def _column_value(kind: str, value: Any, extra: dict[str, Any], field: str) -> Any:
    """The value as stored in a typed column; values of another type go to attrs instead."""
    if value is None:
        return None
    if kind == "int":
        if type(value) is int and _INT_MIN <= value <= _INT_MAX:
            return value
    elif kind == "str":
        if type(value) is str:
            return value
    extra[field] = value
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode_events(events: Sequence[Mapping[str, Any]], version: int = SCHEMA_VERSION) -> bytes:
    """Agent side: event dicts -> msgpack columnar batch bytes (layout ``version``)."""
    return _packb(_batch_map(events, version))


def _batch_map(events: Sequence[Mapping[str, Any]], version: int) -> dict[str, Any]:
    n = len(events)
    cols: dict[str, list[Any]] = {name: [None] * n for name in COLUMN_NAMES}
    column_fields = set(EVENT_COLUMN_FIELDS) | {"host"}
    for i, event in enumerate(events):
        extra: dict[str, Any] = {}
        for field, value in event.items():
            if field in column_fields:
                if field == "host":
                    continue  # the envelope's host id is authoritative
                cols[field][i] = _column_value(COLUMN_TYPES[field], value, extra, field)
            elif value is not None:
                extra[field] = value
        cols["failed"][i] = is_failed(event)
        if extra:
            cols["attrs"][i] = json.dumps(extra, default=_json_default, separators=(",", ":"))
    if version == 1:
        return {"n": n, "cols": cols}
    return {"n": n, "cols": _pack_columns(n, cols, COLUMNS, ("ts", "kind"))}


def encode_rollup_batch(events: Sequence[Mapping[str, Any]], rollup_rows: dict[str, list[Any]]) -> bytes:
    """Agent side, ``summary`` mode: raw events plus agent-made rollup rows (layout version 3).

    ``rollup_rows`` maps every ``rollup.ROW_COLUMNS`` name to a list of values (one per row)."""
    from dnstrace.wire.rollup import ROW_COLUMNS

    batch = _batch_map(events, SCHEMA_VERSION)
    count = len(rollup_rows["minute"])
    batch["rollups"] = {"n": count, "cols": _pack_columns(count, rollup_rows, ROW_COLUMNS, _ROLLUP_REQUIRED)}
    return _packb(batch)


_ROLLUP_REQUIRED = ("minute", "kind", "failed", "events")


def _pack_columns(n: int, cols: dict[str, list[Any]], columns: Sequence[tuple[str, str]],
                  required: Sequence[str]) -> dict[str, Any]:
    """Version 2 layout of columns given as lists (``None`` = missing)."""
    packed: dict[str, Any] = {}
    for name, kind in columns:
        values = cols[name]
        if name not in required and values.count(None) == n:
            continue
        if kind == "int":
            numbers = array("q", [0 if v is None else v for v in values])
            column: Any = {"v": _little_endian(numbers)}
            if None in values:
                column["m"] = bytes([v is not None for v in values])
        elif kind == "str":
            index: dict[str, int] = {}
            setdefault = index.setdefault
            codes = array("i", [-1 if v is None else setdefault(v, len(index)) for v in values])
            column = {"d": list(index), "i": _little_endian(codes)}
        else:
            column = bytes([bool(v) for v in values])
        packed[name] = column
    return packed


def _packb(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _little_endian(numbers: array[int]) -> bytes:
    if sys.byteorder != "little":
        numbers.byteswap()
    return numbers.tobytes()


class DecodedBatch:
    """``count`` events as typed Arrow arrays (``arrays``, every name in COLUMN_NAMES).

    ``columns`` gives the same as Python lists (decoded v1 lists are kept; otherwise
    built from the arrays on first use). ``drop_lists`` frees them when only Arrow is read.
    """

    def __init__(self, count: int, arrays: dict[str, Any], lists: dict[str, list[Any]] | None = None,
                 rollups: dict[str, Any] | None = None) -> None:
        self.count = count
        self.arrays = arrays
        self._lists = lists
        self.rollups = rollups  # agent-made rollup rows (``rollup.ROW_COLUMNS`` -> Arrow array), or None

    @property
    def rollup_count(self) -> int:
        return len(self.rollups["minute"]) if self.rollups else 0

    def rollup_arrays(self) -> dict[str, Any]:
        return self.rollups or {}

    def max_ts(self) -> int | None:
        """The newest event (or rollup minute) in the batch."""
        import pyarrow.compute as pc

        arrays = [self.arrays["ts"]] if self.count else []
        if self.rollups and self.rollup_count:
            arrays.append(self.rollups["minute"])
        newest: list[int] = [pc.max(a).as_py() for a in arrays]
        return max(newest) if newest else None

    @property
    def columns(self) -> dict[str, list[Any]]:
        if self._lists is None:
            self._lists = {name: self.arrays[name].to_pylist() for name in COLUMN_NAMES}
        return self._lists

    def drop_lists(self) -> None:
        self._lists = None

    def arrow_table(self) -> Any:
        """The columns as one pyarrow table (``COLUMNS`` order and types)."""
        import pyarrow as pa

        return pa.table(self.arrays)


def decode_batch(payload: bytes, expected_count: int | None = None, max_events: int = 1_000_000,
                 check_attrs_json: bool = True, version: int = SCHEMA_VERSION) -> DecodedBatch:
    """Collector side: validate and unpack. Raises ``BatchError`` on anything malformed.

    Types are checked while building typed Arrow arrays (C loops, or no loop at all for
    version 2's packed buffers); the store inserts those arrays as they are. ``attrs``
    values must be strings that start with ``{`` and end with ``}``; with
    ``check_attrs_json`` each is also parsed here. A store that validates JSON itself at
    insert time (DuckDB's ``json_valid``, without the GIL) passes False and refuses the
    batch there instead.
    """
    if version not in SUPPORTED_VERSIONS:
        raise BatchError(f"schema version {version} is not supported")
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_ext_len=0,
                              max_bin_len=len(payload) if version >= 2 else 0)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise BatchError(f"not a msgpack batch: {type(err).__name__}") from None
    allowed = {"n", "cols", "rollups"} if version >= 3 else {"n", "cols"}
    if not isinstance(obj, dict) or not {"n", "cols"} <= set(obj) <= allowed:
        raise BatchError("batch must be a map with exactly 'n' and 'cols'" + (" (and 'rollups')" if version >= 3 else ""))
    n, cols = obj["n"], obj["cols"]
    if type(n) is not int or not 0 <= n <= max_events:
        raise BatchError(f"event count must be 0..{max_events}")
    if expected_count is not None and n != expected_count:
        raise BatchError(f"envelope says {expected_count} events, payload holds {n}")
    if not isinstance(cols, dict):
        raise BatchError("'cols' must be a map")
    unknown = set(cols) - set(COLUMN_NAMES)
    if unknown:
        raise BatchError(f"unknown columns: {sorted(unknown)[:5]}")
    if version >= 2:
        arrays = _unpack_v2(n, cols)
        _check_values(arrays)
        _check_attrs(arrays["attrs"], check_attrs_json)
        return DecodedBatch(n, arrays, rollups=_unpack_rollups(obj["rollups"], max_events) if "rollups" in obj else None)
    columns: dict[str, list[Any]] = {}
    for name, _kind in COLUMNS:
        values = cols.get(name)
        if values is None:
            if name in ("ts", "kind"):
                raise BatchError(f"column {name!r} is required")
            values = [None] * n
        elif not isinstance(values, list) or len(values) != n:
            raise BatchError(f"column {name!r} must be a list of {n} values")
        columns[name] = values
    arrays = _to_arrow(columns)
    _check_values(arrays)
    _check_attrs(arrays["attrs"], check_attrs_json)
    return DecodedBatch(n, arrays, columns)


def _unpack_rollups(section: Any, max_rows: int) -> dict[str, Any]:
    """Version 3's agent rollup rows -> Arrow arrays (``rollup.ROW_COLUMNS``), validated like events."""
    import pyarrow.compute as pc

    from dnstrace.wire.rollup import MINUTE_NS, ROW_COLUMNS

    if not isinstance(section, dict) or set(section) != {"n", "cols"}:
        raise BatchError("'rollups' must be a map with exactly 'n' and 'cols'")
    n, cols = section["n"], section["cols"]
    if type(n) is not int or not 0 <= n <= max_rows:
        raise BatchError(f"rollup row count must be 0..{max_rows}")
    if not isinstance(cols, dict) or set(cols) - set(name for name, _ in ROW_COLUMNS):
        raise BatchError("'rollups' holds unknown columns")
    arrays = _unpack_v2(n, cols, ROW_COLUMNS, _ROLLUP_REQUIRED)
    if n:
        import pyarrow as pa

        if pc.min(arrays["events"]).as_py() < 1:
            raise BatchError("a rollup row must count at least one event")
        buckets = arrays["lat_bucket"]
        if buckets.null_count < n and not 0 <= pc.min(buckets).as_py() <= pc.max(buckets).as_py() <= 64 * 8:
            raise BatchError("rollup latency buckets must be 0..512")  # buckets of int64 latencies
        minute = pa.scalar(MINUTE_NS, pa.int64())
        whole = pc.multiply(pc.divide(arrays["minute"], minute), minute)  # integer division
        if not pc.all(pc.equal(whole, arrays["minute"])).as_py():
            raise BatchError("rollup minutes must be whole minutes (ns)")
    return arrays


def _unpack_v2(n: int, cols: dict[str, Any], columns: Sequence[tuple[str, str]] = COLUMNS,
               required: Sequence[str] = ("ts", "kind")) -> dict[str, Any]:
    """Version 2 columns -> Arrow arrays wrapping the payload's buffers; validates sizes, codes and types.

    A handful of Arrow calls per column, whatever the batch size: per-call overhead (~5 us) is what a
    small batch costs, so presence flags become validity bitmaps directly instead of masking afterwards.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow_types = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_()}
    arrays = {}
    for name, kind in columns:
        column = cols.get(name)
        if column is None:
            if name in required:
                raise BatchError(f"column {name!r} is required")
            arrays[name] = pa.nulls(n, arrow_types[kind])
            continue
        try:
            if kind == "int":
                if not isinstance(column, dict) or not set(column) <= {"v", "m"} or "v" not in column:
                    raise BatchError(f"column {name!r} must be a map with 'v' (and 'm')")
                values, present = column["v"], column.get("m")
                if type(values) is not bytes or len(values) != 8 * n:
                    raise BatchError(f"column {name!r} must hold {n} int64 values")
                validity = None if present is None else _flags(present, n, name).buffers()[1]
                array = pa.Array.from_buffers(pa.int64(), n, [validity, pa.py_buffer(values)])
            elif kind == "str":
                if not isinstance(column, dict) or set(column) != {"d", "i"}:
                    raise BatchError(f"column {name!r} must be a map with 'd' and 'i'")
                words, codes = column["d"], column["i"]
                if not isinstance(words, list) or len(words) > max(n, 1) or not set(map(type, words)) <= {str}:
                    raise BatchError(f"column {name!r}: 'd' must be a list of at most {n} strings")
                if type(codes) is not bytes or len(codes) != 4 * n:
                    raise BatchError(f"column {name!r} must hold {n} int32 codes")
                raw = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(codes)])
                # -1 means missing: those slots become nulls; every other code must index the dictionary,
                # which from_arrays checks (safe=True; null slots are not checked).
                present = pc.not_equal(raw, _const("minus_one"))
                indices = pa.Array.from_buffers(pa.int32(), n, [present.buffers()[1], pa.py_buffer(codes)])
                try:
                    array = pa.DictionaryArray.from_arrays(indices, pa.array(words, type=pa.string()), safe=True)
                except pa.ArrowIndexError:
                    raise BatchError(f"column {name!r} holds codes outside its dictionary") from None
            else:
                array = _flags(column, n, name)
        except BatchError:
            raise
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as err:
            raise BatchError(f"column {name!r} is malformed ({type(err).__name__})") from None
        if name in required and array.null_count:
            raise BatchError(f"column {name!r} must not hold nulls")
        arrays[name] = array
    return arrays


def _flags(data: Any, n: int, name: str) -> Any:
    """N bytes of 0/1 -> an Arrow boolean array (its value bitmap doubles as a validity bitmap)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if type(data) is not bytes or len(data) != n:
        raise BatchError(f"column {name!r} must hold {n} flag bytes")
    return pc.not_equal(pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(data)]), _const("zero_u8"))


_CONSTANTS: dict[str, Any] = {}


def _const(name: str) -> Any:
    """Arrow scalars made once: making them from Python values retries optional imports on every call."""
    if not _CONSTANTS:
        import pyarrow as pa

        _CONSTANTS.update(minus_one=pa.scalar(-1, pa.int32()), zero_u8=pa.scalar(0, pa.uint8()),
                          max_depth=pa.scalar(MAX_ATTRS_DEPTH, pa.int32()), empty=pa.scalar("", pa.string()),
                          comma=pa.scalar(",", pa.string()), string=pa.string(), large_string=pa.large_string(),
                          large_binary=pa.large_binary())
    return _CONSTANTS[name]


def _to_arrow(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """Typed Arrow arrays; any value of the wrong type (or out of range) raises ``BatchError``."""
    import pyarrow as pa

    arrays = {}
    for name, kind in COLUMNS:
        values = columns[name]
        try:
            if kind == "int":
                # Inferred, not cast: a float or bool among ints makes another type instead of being coerced.
                array = pa.array(values)
                if array.type == pa.null():
                    array = pa.nulls(len(values), pa.int64())
                elif array.type != pa.int64():
                    raise BatchError(f"column {name!r} holds {array.type} values, not integers")
            else:
                array = pa.array(values, type=pa.string() if kind == "str" else pa.bool_())
        except (pa.ArrowException, OverflowError, TypeError, ValueError) as err:
            if isinstance(err, BatchError):
                raise
            raise BatchError(f"column {name!r} holds values of the wrong type or range "
                             f"({type(err).__name__})") from None
        if name in ("ts", "kind") and array.null_count:
            raise BatchError(f"column {name!r} must not hold nulls")
        arrays[name] = array
    return arrays


def _check_values(arrays: dict[str, Any]) -> None:
    """Value ranges every reader relies on: timestamps and text sizes (Arrow kernels, no Python loop)."""
    import pyarrow.compute as pc

    ts = arrays["ts"]
    if len(ts):
        low, high = pc.min_max(ts).values()
        if low.as_py() < TS_MIN_NS or high.as_py() >= TS_MAX_NS:
            raise BatchError(f"'ts' must be a time in ns between 2000 and 2200 (got {low.as_py()}..{high.as_py()})")
    for name, kind in COLUMNS:
        if kind != "str":
            continue
        array = arrays[name]
        if hasattr(array, "dictionary"):
            array = array.dictionary
        if not len(array) or array.null_count == len(array):
            continue
        limit = MAX_ATTRS_CHARS if name == "attrs" else MAX_FIELD_CHARS
        longest = pc.max(pc.utf8_length(array)).as_py()
        if longest is not None and longest > limit:
            raise BatchError(f"column {name!r} holds a value of {longest} characters (limit {limit})")


def attrs_depth_ok(texts: list[str]) -> bool:
    """True when no JSON text nests deeper than MAX_ATTRS_DEPTH (regex passes in C, no recursion)."""
    if not texts:
        return True
    # One newline-joined text: neither the string nor the bracket pattern crosses a newline, and JSON
    # holds none outside strings that matter, so each value is reduced on its own.
    rest = _JSON_STRING.sub("", "\n".join(texts))
    for _ in range(MAX_ATTRS_DEPTH):
        reduced = _JSON_INNERMOST.sub("", rest)
        if reduced == rest:
            break
        rest = reduced
    return _JSON_OPENERS.search(rest) is None


def _check_attrs(array: Any, check_json: bool) -> None:
    """Every attrs value is null or one JSON object (cheap shape check in Arrow; full parse optional)."""
    import pyarrow.compute as pc

    if array.null_count == len(array):
        return
    if hasattr(array, "dictionary"):
        array = array.dictionary  # every distinct value (codes were range-checked)
    if pc.starts_with(array, "{").false_count or pc.ends_with(array, "}").false_count:  # nulls are not false
        raise BatchError("each 'attrs' value must be one JSON object")
    # Nesting needs an opening bracket per level, so only values holding more than MAX_ATTRS_DEPTH of them
    # (counted in Arrow, without the GIL) can nest too deep; the regex reduction runs on those alone.
    brackets = pc.add(pc.count_substring(array, "{"), pc.count_substring(array, "["))
    suspects = array.filter(pc.greater(brackets, _const("max_depth"))).to_pylist()
    if not attrs_depth_ok(suspects):
        raise BatchError(f"an 'attrs' value nests deeper than {MAX_ATTRS_DEPTH} levels")
    if not check_json:
        return
    present = array.drop_null() if array.null_count else array
    if _all_one_json_value(present):
        return  # each value starts with '{': each is one JSON object
    # The fast check is stricter than Python's json (it refuses NaN, Infinity and lone surrogate escapes, which
    # json.dumps writes and older agents may have sent): the verdict, and the error, come from json itself.
    for text in present.to_pylist():
        try:
            parsed, end = _JSON.raw_decode(text)
        except (ValueError, RecursionError):
            raise BatchError("'attrs' holds invalid JSON") from None
        if type(parsed) is not dict or end != len(text):
            raise BatchError("each 'attrs' value must be one JSON object")


_JSON = json.JSONDecoder()
_RAW_LIST: Any = None  # msgspec decoder of a JSON array into its elements' raw bytes, made on first use


def _all_one_json_value(values: Any) -> bool:
    """True when every string of ``values`` is exactly one valid (RFC 8259) JSON value, checked in one parse.

    The values are joined into one JSON array and msgspec parses it without building the elements; the span of
    each element must then be exactly one value (joining alone would let a value like ``{"a":1},{"b":"}`` and
    its neighbour parse as two other elements).
    """
    global _RAW_LIST
    import msgspec
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(values):
        return True
    if _RAW_LIST is None:
        _RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
    if values.type == _const("string"):
        empty, comma = _const("empty"), _const("comma")
    else:
        empty, comma = pa.scalar("", values.type), pa.scalar(",", values.type)
    with_commas = pc.binary_join_element_wise(values, empty, comma)
    joined = bytearray(b"[")
    joined += _binary_buffer(with_commas)
    joined[-1] = ord("]")  # the last value's comma
    try:
        elements = _RAW_LIST.decode(joined)
    except msgspec.DecodeError:
        return False
    return len(elements) == len(values) and list(map(len, elements)) == pc.binary_length(values).to_pylist()


def _binary_buffer(values: Any) -> memoryview:
    """The concatenated bytes of a string array's values (a view of its data buffer, honouring its offset)."""
    offsets = values.buffers()[1]
    width = 8 if values.type in (_const("large_string"), _const("large_binary")) else 4
    first = int.from_bytes(offsets[values.offset * width:(values.offset + 1) * width], "little")
    last = int.from_bytes(offsets[(values.offset + len(values)) * width:(values.offset + len(values) + 1) * width],
                          "little")
    return memoryview(values.buffers()[2])[first:last]


def row_to_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row (column name -> value) back to the agent's event dict."""
    event: dict[str, Any] = {}
    attrs = row.get("attrs")
    for name, value in row.items():
        if name in ("attrs", "failed", "boot_id", "instance", "seq") or value is None:
            continue
        event[name] = value
    if attrs:
        try:
            extra = json.loads(attrs)
        except (ValueError, RecursionError):  # never stored by this version; older stores may hold it
            extra = {"attrs_unreadable": True}
        if isinstance(extra, dict):
            for key, value in extra.items():
                event.setdefault(key, value)
    return event
