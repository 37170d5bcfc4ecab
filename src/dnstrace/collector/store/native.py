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

A ``Chunk`` holds one batch's rows laid out like that but still as Arrow arrays (a
String column as its laid-out distinct values and int32 codes into them), so ``block``
can put the rows of several chunks in the table's sort order with one ``take`` per
column: a MergeTree part written from a block already in its ORDER BY order skips the
sort and the permutation of every column, which were a third of clickhouse-server's
insert CPU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

Piece = bytes | memoryview  # a run of a block's bytes: socket.sendall takes either

_ARROW_INTS = {"Int64": "int64", "UInt64": "uint64", "Int32": "int32", "UInt8": "uint8"}
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


def _null_flags(array: Any) -> Any:
    """uint8 array: 1 where ``array`` is NULL."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pc.is_null(array), pa.uint8())


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


def string_codes(array: Any) -> tuple[Any, Any]:
    """(entries, codes) of an Arrow string (or dictionary of strings) array: a binary array holding each distinct
    value's ``String`` data (varint length + bytes; NULL is ''), and int32 codes into it, one per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    coded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    dictionary, codes = coded.dictionary, coded.indices
    if len(dictionary) > _SMALL_DICTIONARY:
        entries = _prefixed(dictionary)
        if entries.null_count:
            entries = pc.fill_null(entries, _constants()["zero"])
    else:
        entries = pa.array([b"\x00" if value is None else varint(len(raw)) + raw for value in dictionary.to_pylist()
                            for raw in (value.encode() if isinstance(value, str) else value,)], pa.binary())
    if codes.null_count:  # NULL rows take an extra entry: the empty string
        codes = pc.fill_null(codes, pa.scalar(len(entries), codes.type))
        entries = pa.concat_arrays([entries, pa.array([b"\x00"], pa.binary())])
    return entries, codes if codes.type == pa.int32() else pc.cast(codes, pa.int32())


def laid_out_strings(array: Any) -> Any:
    """Binary array of each row's ``String`` data (varint length + bytes) for an Arrow string (or dictionary of
    strings) array; NULL becomes ''."""
    import pyarrow.compute as pc

    return pc.take(*string_codes(array))


def string_data(array: Any) -> Piece:
    """``String`` column data for an Arrow string (or dictionary of strings) array; NULL becomes ''."""
    return _binary_data(laid_out_strings(array)) if len(array) else b""


def column_parts(array: Any, ch_type: str) -> tuple[Any | None, Any]:
    """(null flags or None when not Nullable, values) of one column of rows, as Arrow arrays whose buffers hold the
    Native data: uint8 flags, the exact integer type, or for a String the (entries, codes) of ``string_codes``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nullable = ch_type.startswith("Nullable(")
    base = ch_type[len("Nullable("):-1] if nullable else ch_type
    if not nullable and array.null_count:
        raise ValueError(f"NULL in a non-Nullable {ch_type} column")
    if base == "String":
        values = string_codes(array)
    else:
        arrow_type = getattr(pa, _ARROW_INTS[base])()
        values = array if array.type == arrow_type else pc.cast(array, arrow_type)
    return (_null_flags(array) if nullable else None), values


def piece(values: Any) -> Piece:
    """The Native bytes an array from ``column_parts`` holds (a view of its buffer)."""
    import pyarrow as pa

    if pa.types.is_binary(values.type):
        return _binary_data(values)
    return _buffer_bytes(values, values.type.bit_width // 8)


class Chunk:
    """One batch's rows of a block, laid out when the batch arrives (see the module docstring).

    A column is either ``constant`` (one value for every row of the chunk: the batch key) or a list of parts'
    ``values`` (and ``nulls`` for a Nullable column); ``keys`` keeps the source arrays of the ORDER BY columns
    that are not constant, since laid-out strings do not compare like the strings.
    """

    __slots__ = ("columns", "rows", "constants", "nulls", "values", "keys")

    def __init__(self, columns: Sequence[tuple[str, str]], constants: dict[int, Any]):
        self.columns = columns
        self.rows = 0
        self.constants = constants
        self.nulls: dict[int, list[Any]] = {}
        self.values: dict[int, list[Any]] = {}
        self.keys: dict[int, list[Any]] = {}

    def add(self, index: int, array: Any, sort_key: bool = False) -> None:
        """Add one part's rows of column ``index`` (every non-constant column gets the same number of rows)."""
        nulls, values = column_parts(array, self.columns[index][1])
        if nulls is not None:
            self.nulls.setdefault(index, []).append(nulls)
        self.values.setdefault(index, []).append(values)
        if sort_key:
            self.keys.setdefault(index, []).append(array)


def sort_order(chunks: Sequence[Chunk], order_by: Sequence[int], chunk_numbers: Any = None) -> Any:
    """Indices into the chunks' rows (chunk by chunk, part by part) that put them in ``order_by`` order.

    ClickHouse compares String bytewise (shorter prefix first) and integers by value; a string key is ranked
    among the distinct values in play, so Arrow sorts small integers. Ties keep their order (stable sort).
    ``chunk_numbers``: ``_chunk_numbers(chunks)`` when the caller has it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = {}
    for index in order_by:
        if index in chunks[0].constants:
            values = [c.constants[index] for c in chunks]
            if isinstance(values[0], str):
                rank = _ranks(values)
                values = [rank[v] for v in values]
            numbers = _chunk_numbers(chunks) if chunk_numbers is None else chunk_numbers
            keys[f"k{index}"] = pc.take(pa.array(values, pa.int64()), numbers)
            continue
        parts = [part for c in chunks for part in c.keys[index]]
        if pa.types.is_integer(parts[0].type):
            keys[f"k{index}"] = pa.chunked_array(parts).combine_chunks()
            continue
        coded = [p if pa.types.is_dictionary(p.type) else pc.dictionary_encode(p) for p in parts]
        rank = _ranks(v for p in coded for v in p.dictionary.to_pylist())
        keys[f"k{index}"] = pa.chunked_array(
            [pc.take(pa.array([rank[v] for v in p.dictionary.to_pylist()], pa.int32()), p.indices)
             for p in coded]).combine_chunks()
    return pc.sort_indices(pa.table(keys), sort_keys=[(name, "ascending") for name in keys])


def _ranks(values: Iterable[str]) -> dict[str, int]:
    """Each distinct value's place in ClickHouse's String order (bytewise)."""
    return {v: n for n, v in enumerate(sorted(set(values), key=lambda v: v.encode()))}


def _chunk_numbers(chunks: Sequence[Chunk]) -> Any:
    """int32 array: for every row (chunk by chunk), the number of its chunk."""
    import pyarrow as pa

    return pa.chunked_array([pa.repeat(pa.scalar(n, pa.int32()), c.rows) for n, c in enumerate(chunks)],
                            pa.int32()).combine_chunks()


def block(chunks: Sequence[Chunk], order_by: Sequence[int] = (),
          map_columns: Callable[..., Iterable[list[Piece]]] = map) -> list[Piece]:
    """One Native block of these chunks' rows, in ``order_by`` order (column indices) when given, as pieces to
    send back to back. Columns are laid out by ``map_columns`` (a thread pool's ``map``: Arrow lets go of the
    GIL, so the columns of a big block are put in order on every core)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = chunks[0].columns
    chunk_numbers = _chunk_numbers(chunks)
    order = sort_order(chunks, order_by, chunk_numbers) if order_by else None
    if order is not None:
        chunk_numbers = pc.take(chunk_numbers, order)

    def column(index: int) -> list[Piece]:
        name, ch_type = columns[index]
        out: list[Piece] = [_name(name) + _name(ch_type)]
        if index in chunks[0].constants:
            per_chunk = pa.array([c.constants[index] for c in chunks])
            per_chunk = laid_out_strings(per_chunk) if ch_type == "String" else column_parts(per_chunk, ch_type)[1]
            return out + [piece(pc.take(per_chunk, chunk_numbers))]
        if index in chunks[0].nulls:
            nulls = pa.chunked_array([part for c in chunks for part in c.nulls[index]])
            out.append(piece((pc.take(nulls, order) if order is not None else nulls).combine_chunks()))
        parts = [part for c in chunks for part in c.values[index]]
        if isinstance(parts[0], tuple):  # strings: one table of entries, every part's codes shifted into it
            shifted, base = [], 0
            for entries, codes in parts:
                shifted.append(pc.add(codes, pa.scalar(base, pa.int32())) if base else codes)
                base += len(entries)
            codes = pa.chunked_array(shifted).combine_chunks()
            table = pa.concat_arrays([entries for entries, _ in parts])
            return out + [piece(pc.take(table, pc.take(codes, order) if order is not None else codes))]
        values = pa.chunked_array(parts)
        return out + [piece((pc.take(values, order) if order is not None else values).combine_chunks())]

    header: list[Piece] = [varint(len(columns)) + varint(sum(c.rows for c in chunks))]
    return header + [p for pieces in map_columns(column, range(len(columns))) for p in pieces]
