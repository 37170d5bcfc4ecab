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
from collections.abc import Sequence
from typing import Any

Piece = bytes | memoryview  # a run of a block's bytes: socket.sendall takes either

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


def _buffer_bytes(array: Any, width: int) -> memoryview:
    """The value buffer of a fixed-width Arrow array, honouring its offset (a view: nothing is copied)."""
    return memoryview(array.buffers()[1]).cast("B")[array.offset * width:(array.offset + len(array)) * width]


def _null_map(array: Any) -> Piece:
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


def _binary_data(array: Any) -> Piece:
    """The bytes of a binary array's values, concatenated in row order (a view of its data buffer)."""
    offsets = array.buffers()[1]
    first = struct.unpack_from("<i", offsets, array.offset * 4)[0]
    last = struct.unpack_from("<i", offsets, (array.offset + len(array)) * 4)[0]
    data = array.buffers()[2]
    return memoryview(data).cast("B")[first:last] if data is not None else b""


# A dictionary this small is laid out in Python: a few dozen entries cost less than the dozen Arrow calls
# of ``_prefixed`` (most of a batch's string columns: kind, comm, rcode, server... have a handful of values).
_SMALL_DICTIONARY = 64


def _dictionary_data(array: Any) -> Piece:
    import pyarrow as pa
    import pyarrow.compute as pc

    dictionary, indices = array.dictionary, array.indices
    if len(dictionary) > _SMALL_DICTIONARY:
        laid_out = pc.take(_prefixed(dictionary), indices)
        if laid_out.null_count:
            laid_out = pc.fill_null(laid_out, _constants()["zero"])
        return _binary_data(laid_out)
    entries = [b"\x00" if value is None else varint(len(raw)) + raw
               for value in dictionary.to_pylist() for raw in (value.encode() if isinstance(value, str) else value,)]
    if indices.null_count:  # NULL rows take an extra entry: the empty string
        indices = pc.fill_null(indices, pa.scalar(len(entries), indices.type))
        entries.append(b"\x00")
    return _binary_data(pc.take(pa.array(entries, pa.binary()), indices))


def string_data(array: Any) -> Piece:
    """``String`` column data for an Arrow string (or dictionary of strings) array; NULL becomes ''."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(array):
        return b""
    if pa.types.is_dictionary(array.type):
        return _dictionary_data(array)
    laid_out = _prefixed(pc.fill_null(array, _constants()["blank"]))
    if laid_out.null_count:
        laid_out = pc.fill_null(laid_out, _constants()["zero"])
    return _binary_data(laid_out)


def column_parts(array: Any, ch_type: str) -> tuple[Piece | None, Piece]:
    """(null map or None when not Nullable, values) of one column chunk from an Arrow array of matching kind.

    A block's column is every chunk's null map followed by every chunk's values (see ``block``).
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


class Chunk:
    """Some rows of every column of a block, laid out already: one batch's, made when the batch arrives.

    ``nulls[i]`` / ``values[i]`` are column i's pieces (a Nullable column has one null map per part);
    ``block`` strings chunks together without copying them.
    """

    __slots__ = ("columns", "rows", "nulls", "values")

    def __init__(self, columns: Sequence[tuple[str, str]]):
        self.columns = columns
        self.rows = 0
        self.nulls: list[list[Piece]] = [[] for _ in columns]
        self.values: list[list[Piece]] = [[] for _ in columns]

    def add(self, index: int, array: Any) -> None:
        null_map, values = column_parts(array, self.columns[index][1])
        if null_map is not None:
            self.nulls[index].append(null_map)
        self.values[index].append(values)

    def add_constant(self, index: int, value: Any, rows: int) -> None:
        self.values[index].append(constant_data(value, self.columns[index][1], rows))

    @property
    def nbytes(self) -> int:
        return sum(len(p) for pieces in (*self.nulls, *self.values) for p in pieces)


def block(chunks: Sequence[Chunk]) -> list[Piece]:
    """One Native block of these chunks' rows, as pieces to send back to back (the chunks' data is not copied)."""
    columns = chunks[0].columns
    out: list[Piece] = [varint(len(columns)) + varint(sum(c.rows for c in chunks))]
    for index, (name, ch_type) in enumerate(columns):
        out.append(_name(name) + _name(ch_type))
        for chunk in chunks:
            out += chunk.nulls[index]
        for chunk in chunks:
            out += chunk.values[index]
    return out


def constant_data(value: Any, ch_type: str, rows: int) -> bytes:
    """Native data of a column holding one value on every row (no per-row work beyond a bytes repeat)."""
    if ch_type == "String":
        raw: bytes = value.encode()
        return (varint(len(raw)) + raw) * rows
    fmt = {"UInt64": "<Q", "Int64": "<q", "UInt8": "<B", "Int32": "<i"}[ch_type]
    return struct.pack(fmt, value) * rows
