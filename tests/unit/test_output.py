"""Event output: JSON lines keep every field; tables align the declared columns."""

import io
import json

from dnstrace.output import Column, EventWriter, fmt_latency


def test_json_lines_keep_all_fields():
    out = io.StringIO()
    writer = EventWriter(json_lines=True, out=out)
    writer.write({"kind": "gai", "pid": 7, "name": "x", "raw": b"\xff", "tags": {"a"}})
    writer.write({"kind": "gai", "pid": 8})
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["pid"] for line in lines] == [7, 8]
    assert json.loads(lines[0])["raw"] == "\ufffd"
    assert json.loads(lines[0])["tags"] == ["a"]


def test_table_has_header_once_and_aligned_columns():
    out = io.StringIO()
    columns = (Column("pid", "PID", 6), Column("latency_ns", "LATENCY", 9, fmt_latency), Column("name", "NAME", 20))
    writer = EventWriter(json_lines=False, columns=columns, out=out)
    writer.write({"pid": 42, "latency_ns": 1_000_000_000, "name": "web.example.test"})
    writer.write({"pid": 4711, "latency_ns": None, "name": "a"})
    header, first, second = out.getvalue().splitlines()
    assert header.split() == ["PID", "LATENCY", "NAME"]
    assert first.split() == ["42", "1.00s", "web.example.test"]
    assert second.split() == ["4711", "-", "a"]
    assert first.index("1.00s") == header.index("LATENCY")
