"""ClickHouse's Native format, written from Arrow arrays without touching values in Python.

A Native block (what ``INSERT ... FORMAT Native`` reads over HTTP; every server
release since long before 18.16 accepts it) is: varint column count, varint row
count, then per column its name, its type name and its data. The data layouts used
here:

- ``Int64`` / ``UInt64`` / ``Int32`` / ``UInt8``: the little-endian values, back to back
  (exactly Arrow's value buffer);
- ``Nullable(T)``: one byte per row (1 = NULL) then T's data with any value in NULL slots;
- ``String``: per row a varint length then the bytes.

Strings are the only layout Arrow does not already hold. Each distinct value is
serialized once (varint prefix built with Arrow compute, then joined to the value)
and ``take`` by the dictionary codes lays them out row by row in C: what a batch
costs is a few dozen Arrow calls whatever its size.
"""

from __future__ import annotations

import struct
from typing import Any

_ARROW_INTS = {"Int64": "int64", "UInt64": "uint64", "Int32": "int32", "UInt8": "uint8"}
_WIDTHS = {"Int64": 8, "UInt64": 8, "Int32": 4, "UInt8": 1}
_VARINT_MAX_BYTES = 5  # lengths below 2^35: far beyond any batch limit


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return varint(len(raw)) + raw


def _buffer_bytes(array: Any, width: int) -> bytes:
    """The value buffer of a fixed-width Arrow array, honouring its offset."""
    data: bytes = array.buffers()[1].slice(array.offset * width, len(array) * width).to_pybytes()
    return data


def _null_map(array: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not array.null_count:
        return bytes(len(array))
    flags = pc.cast(pc.is_null(array), pa.uint8())
    return _buffer_bytes(flags, 1)


def _prefixed(values: Any) -> Any:
    """Binary array of varint(len(v)) + v for each (non-null) string/binary value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    const = _constants()
    values = pc.cast(values, pa.binary())
    lengths = pc.cast(pc.binary_length(values), pa.int64())
    count = len(values)
    longest = pc.max(lengths).as_py() or 0
    parts = []
    for k in range(_VARINT_MAX_BYTES):
        if k and longest < (1 << (7 * k)):
            break
        byte = pc.bit_wise_and(pc.shift_right(lengths, const["shift"][k]), const["low7"])
        byte = pc.if_else(pc.greater_equal(lengths, const["limit"][k + 1]), pc.bit_wise_or(byte, const["more"]), byte)
        raw = pc.cast(byte, pa.uint8())
        part = pc.cast(pa.Array.from_buffers(pa.binary(1), count, [None, pa.py_buffer(_buffer_bytes(raw, 1))]),
                       pa.binary())
        if k:
            part = pc.if_else(pc.greater_equal(lengths, const["limit"][k]), part, const["empty"])
        parts.append(part)
    return pc.binary_join_element_wise(*parts, values, const["empty"])


_CONSTANTS: dict[str, Any] = {}


def _constants() -> dict[str, Any]:
    """Arrow scalars made once: converting Python values on every compute call retries optional imports."""
    if not _CONSTANTS:
        import pyarrow as pa

        int64 = pa.int64()
        _CONSTANTS.update(
            shift=[pa.scalar(7 * k, int64) for k in range(_VARINT_MAX_BYTES)],
            limit=[pa.scalar(1 << (7 * k), int64) for k in range(_VARINT_MAX_BYTES + 1)],
            low7=pa.scalar(0x7F, int64), more=pa.scalar(0x80, int64), empty=pa.scalar(b"", pa.binary()),
            zero=pa.scalar(b"\x00", pa.binary()), blank=pa.scalar("", pa.string()))
    return _CONSTANTS


def _binary_data(array: Any) -> bytes:
    """The bytes of a binary array's values, concatenated in row order."""
    offsets = array.buffers()[1]
    first = struct.unpack_from("<i", offsets, array.offset * 4)[0]
    last = struct.unpack_from("<i", offsets, (array.offset + len(array)) * 4)[0]
    data = array.buffers()[2]
    return data.slice(first, last - first).to_pybytes() if data is not None else b""


def string_data(array: Any) -> bytes:
    """``String`` column data for an Arrow string (or dictionary of strings) array; NULL becomes ''."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(array):
        return b""
    if pa.types.is_dictionary(array.type):
        entries = _prefixed(array.dictionary)
        laid_out = pc.take(entries, array.indices)
    else:
        laid_out = _prefixed(pc.fill_null(array, _constants()["blank"]))
    if laid_out.null_count:
        laid_out = pc.fill_null(laid_out, _constants()["zero"])
    return _binary_data(laid_out)


def column_parts(array: Any, ch_type: str) -> tuple[bytes | None, bytes]:
    """(null map or None when not Nullable, values) of one column chunk from an Arrow array of matching kind.

    A block's column is every chunk's null map followed by every chunk's values (``Column`` joins them).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    nullable = ch_type.startswith("Nullable(")
    base = ch_type[len("Nullable("):-1] if nullable else ch_type
    rows = len(array)
    if nullable and array.null_count == rows:
        return b"\x01" * rows, (b"\x00" if base == "String" else bytes(_WIDTHS[base])) * rows
    if not nullable and array.null_count:
        raise ValueError(f"NULL in a non-Nullable {ch_type} column")
    if base == "String":
        body = string_data(array)
    else:
        arrow_type = getattr(pa, _ARROW_INTS[base])()
        if array.type != arrow_type:
            array = pc.cast(array, arrow_type)
        body = _buffer_bytes(array, _WIDTHS[base])
    return (_null_map(array) if nullable else None), body


class Column:
    """One column of a block being assembled from chunks (one per batch)."""

    def __init__(self, name: str, ch_type: str):
        self.name, self.ch_type = name, ch_type
        self.null_maps: list[bytes] = []
        self.values: list[bytes] = []

    def add(self, array: Any) -> None:
        null_map, values = column_parts(array, self.ch_type)
        if null_map is not None:
            self.null_maps.append(null_map)
        self.values.append(values)

    def add_constant(self, value: Any, rows: int) -> None:
        self.values.append(constant_data(value, self.ch_type, rows))

    def data(self) -> bytes:
        return b"".join(self.null_maps + self.values)


def block(rows: int, columns: list[Column]) -> bytes:
    """One Native block of ``rows`` rows."""
    out = [varint(len(columns)), varint(rows)]
    for column in columns:
        out += [_name(column.name), _name(column.ch_type), column.data()]
    return b"".join(out)


def constant_data(value: Any, ch_type: str, rows: int) -> bytes:
    """Native data of a column holding one value on every row (no per-row work beyond a bytes repeat)."""
    if ch_type == "String":
        raw: bytes = value.encode()
        return (varint(len(raw)) + raw) * rows
    fmt = {"UInt64": "<Q", "Int64": "<q", "UInt8": "<B", "Int32": "<i"}[ch_type]
    return struct.pack(fmt, value) * rows
