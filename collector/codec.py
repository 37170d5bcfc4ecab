"""Event batches on the wire and in the spool: msgpack columnar, validated into typed columns.

An agent turns a list of event dicts into one msgpack map ``{"n": N, "cols": {...}}``:
one list per stored column (``COLUMNS``, ``None`` where an event lacks the field),
plus ``attrs``: per event, a JSON object of every other field (kind-specific fields,
lists, dicts), so new event kinds need no collector change. The agent also computes
``failed`` (did this event go wrong?) so stores and queries share one definition.

The collector decodes with ``decode_batch``: any malformed input raises
``BatchError`` (the server turns it into a gRPC error status); nothing is half-decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgpack

SCHEMA_VERSION = 1

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
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_FAILED_RESULTS = frozenset(("refused", "timeout", "reset"))


class BatchError(ValueError):
    """The batch is malformed: wrong structure, types or sizes."""


def event_failed(event: dict) -> bool:
    """One definition of "this went wrong" shared by every store and query."""
    if event.get("error") is not None:
        return True
    rcode = event.get("rcode")
    if rcode is not None and rcode != "NOERROR":
        return True
    if event.get("answered") is False:
        return True
    if event.get("result") in _FAILED_RESULTS:
        return True
    return event.get("kind") == "drop"


def _column_value(kind: str, value, extra: dict, field: str):
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


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode_events(events: list[dict]) -> bytes:
    """Agent side: event dicts -> msgpack columnar batch bytes."""
    n = len(events)
    cols: dict[str, list] = {name: [None] * n for name in COLUMN_NAMES}
    column_fields = set(EVENT_COLUMN_FIELDS) | {"host"}
    for i, event in enumerate(events):
        extra: dict = {}
        for field, value in event.items():
            if field in column_fields:
                if field == "host":
                    continue  # the envelope's host id is authoritative
                cols[field][i] = _column_value(COLUMN_TYPES[field], value, extra, field)
            elif value is not None:
                extra[field] = value
        cols["failed"][i] = event_failed(event)
        if extra:
            cols["attrs"][i] = json.dumps(extra, default=_json_default, separators=(",", ":"))
    return msgpack.packb({"n": n, "cols": cols}, use_bin_type=True)


@dataclass
class DecodedBatch:
    count: int
    columns: dict[str, list]  # every name in COLUMN_NAMES, each a list of ``count`` values
    arrays: dict | None = None  # the same columns as typed pyarrow arrays (built while validating)

    def arrow_table(self):
        """The columns as one pyarrow table (``COLUMNS`` order and types)."""
        import pyarrow as pa

        arrays = self.arrays if self.arrays is not None else _to_arrow(self.columns)
        return pa.table(arrays)


def decode_batch(payload: bytes, expected_count: int | None = None, max_events: int = 1_000_000,
                 check_attrs_json: bool = True) -> DecodedBatch:
    """Collector side: validate and unpack. Raises ``BatchError`` on anything malformed.

    Types are checked by converting each column to a typed Arrow array (one C loop per
    column; the store inserts those arrays as they are). ``attrs`` values must be strings
    that start with ``{`` and end with ``}``; with ``check_attrs_json`` each is also parsed
    here. A store that validates JSON itself at insert time (DuckDB's ``json_valid``,
    without the GIL) passes False and refuses the batch there instead.
    """
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except Exception as err:  # msgpack raises several unrelated types on garbage
        raise BatchError(f"not a msgpack batch: {type(err).__name__}") from None
    if not isinstance(obj, dict) or set(obj) != {"n", "cols"}:
        raise BatchError("batch must be a map with exactly 'n' and 'cols'")
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
    columns: dict[str, list] = {}
    for name, kind in COLUMNS:
        values = cols.get(name)
        if values is None:
            if name in ("ts", "kind"):
                raise BatchError(f"column {name!r} is required")
            values = [None] * n
        elif not isinstance(values, list) or len(values) != n:
            raise BatchError(f"column {name!r} must be a list of {n} values")
        columns[name] = values
    arrays = _to_arrow(columns)
    _check_attrs(arrays["attrs"], columns["attrs"], check_attrs_json)
    return DecodedBatch(n, columns, arrays)


def _to_arrow(columns: dict[str, list]) -> dict:
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


def _check_attrs(array, texts: list, check_json: bool) -> None:
    """Every attrs value is null or one JSON object (cheap shape check in Arrow; full parse optional)."""
    import pyarrow.compute as pc

    if array.null_count == len(array):
        return
    shaped = pc.and_(pc.starts_with(array, "{"), pc.ends_with(array, "}"))
    if not pc.all(shaped, skip_nulls=True).as_py():
        raise BatchError("each 'attrs' value must be one JSON object")
    if not check_json:
        return
    present = [a for a in texts if a is not None]
    try:
        parsed = json.loads("[" + ",".join(present) + "]")
    except (ValueError, RecursionError):
        raise BatchError("'attrs' holds invalid JSON") from None
    if len(parsed) != len(present) or any(type(p) is not dict for p in parsed):
        raise BatchError("each 'attrs' value must be one JSON object")


def row_to_event(row: dict) -> dict:
    """A stored row (column name -> value) back to the agent's event dict."""
    event = {}
    attrs = row.get("attrs")
    for name, value in row.items():
        if name in ("attrs", "failed", "boot_id", "instance", "seq") or value is None:
            continue
        event[name] = value
    if attrs:
        try:
            extra = json.loads(attrs)
        except ValueError:
            extra = {}
        if isinstance(extra, dict):
            for key, value in extra.items():
                event.setdefault(key, value)
    return event
