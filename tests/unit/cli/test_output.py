"""Event output: JSON lines keep every field; tables align the declared columns."""

import io
import json
import os
import sys
import time
from pathlib import Path

from dnstrace.cli.output import EventWriter, OutputPipe
from dnstrace.columns import Column, fmt_latency, fmt_time


def test_json_lines_keep_all_fields():
    out = io.StringIO()
    writer = EventWriter(json_lines=True, out=out)
    writer.write_batch([{"kind": "gai", "pid": 7, "name": "x\n\"y", "tags": {"a"}, "obj": Path("/p")},
                        {"kind": "gai", "pid": 8, "error": None}])
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["pid"] for line in lines] == [7, 8]
    assert json.loads(lines[0])["name"] == "x\n\"y"
    assert json.loads(lines[0])["tags"] == ["a"]
    assert json.loads(lines[0])["obj"] == "/p"  # anything else JSON lacks: its str()
    assert json.loads(lines[1]) == {"kind": "gai", "pid": 8, "error": None}


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


def test_table_batch_cuts_wide_cells_and_prints_the_header_once():
    out = io.StringIO()
    columns = (Column("comm", "COMM", 4), Column("name", "NAME", 3))
    writer = EventWriter(json_lines=False, columns=columns, out=out)
    writer.write_batch([{"comm": "curl-long", "name": "a-long-last-cell"}, {"comm": None}])
    writer.write_batch([{"comm": "x", "name": "y"}])
    assert out.getvalue().splitlines() == ["COMM NAME", "curl a-long-last-cell", "-    -", "x    y"]


def test_fmt_time_keeps_milliseconds_across_cached_seconds():
    second = 1_700_000_000 * 1_000_000_000
    first, later = fmt_time(second + 5_000_000), fmt_time(second + 999_999_999)
    assert first[:8] == later[:8] and first.endswith(".005") and later.endswith(".999")
    assert fmt_time(None) == "-"


def test_slow_reader_drops_whole_batches_counted_and_never_blocks():
    read_end, write_end = os.pipe()
    pipe = OutputPipe(write_end, max_backlog=256 << 10)
    chunk = b"x" * (64 << 10)
    try:
        started = time.monotonic()
        accepted = sum(pipe.offer(chunk, events=10) for _ in range(64))  # 4 MiB into a pipe nobody reads
        assert time.monotonic() - started < 5  # generous: offer() must not wait for the reader
        assert accepted < 64
        assert pipe.dropped_events == 10 * (64 - accepted) and pipe.dropped_chunks == 64 - accepted
        received = 0
        os.set_blocking(read_end, False)
        deadline = time.monotonic() + 10
        while received < accepted * len(chunk) and time.monotonic() < deadline:
            try:
                received += len(os.read(read_end, 1 << 20))
            except BlockingIOError:
                time.sleep(0.01)
        assert received == accepted * len(chunk)  # what was accepted is written whole
    finally:
        pipe.close()
        os.close(read_end)
        os.close(write_end)


def test_closed_reader_marks_the_pipe_broken():
    read_end, write_end = os.pipe()
    os.close(read_end)
    pipe = OutputPipe(write_end)
    try:
        pipe.offer(b"line\n", events=1)
        deadline = time.monotonic() + 10
        while not pipe.broken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pipe.broken
        assert not pipe.offer(b"more\n", events=1)
    finally:
        pipe.close()
        os.close(write_end)


def test_writer_says_once_per_interval_that_stdout_is_slow_and_sums_up_at_close(monkeypatch, capsys):
    read_end, write_end = os.pipe()
    monkeypatch.setattr("sys.stdout", os.fdopen(write_end, "w"))
    writer = EventWriter(json_lines=True, max_backlog=64 << 10, warn_interval_s=3600)
    batch = [{"kind": "gai", "name": "x" * 200, "i": i} for i in range(1000)]  # ~230 KB a batch
    for _ in range(20):
        writer.write_batch(batch)  # nobody reads: the pipe fills, then the backlog
    os.close(read_end)  # the writer thread's pending write fails: it stops
    writer.close()
    sys.stdout.close()
    dropped = writer.pipe.dropped_events
    assert dropped >= 1000 * 18 and dropped % 1000 == 0  # whole batches, counted
    lines = capsys.readouterr().err.splitlines()
    assert sum("output is slower than the events" in line for line in lines) == 1
    assert any(f"{dropped} events not written" in line for line in lines if line.startswith("dnstrace: output:"))
