"""Unit tests: the columnar codec, the bounded spool, the embedded collector, generated protobuf code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from collector_helpers import DNSTRACE, REPO
from recorded import BASE_TS, make_events

from dnstrace import config as config_mod
from dnstrace.pipeline.shipping import make_sink
from dnstrace.ship.spool import Spool, SpoolRecord
from dnstrace.wire.codec import BatchError, decode_batch, encode_events, row_to_event


def _record(seq, n=10, size=0):
    return SpoolRecord(1, "h", "b", 5, seq, n, b"x" * (size or n))


def test_codec_round_trip_keeps_every_field_and_new_kinds():
    events = make_events("c", 50) + [{"kind": "brand_new", "ts": BASE_TS + 1, "pid": "not-an-int", "odd": {"x": [1, 2]},
                                      "blob": b"\x00\x01"}]
    batch = decode_batch(encode_events(events))
    assert batch.count == 51
    rows = [row_to_event({k: batch.columns[k][i] for k in batch.columns}) for i in range(batch.count)]
    assert rows[:50] == [{k: v for k, v in e.items() if v is not None} for e in events[:50]]
    assert rows[50] == {"kind": "brand_new", "ts": BASE_TS + 1, "pid": "not-an-int", "odd": {"x": [1, 2]}, "blob": "\x00\x01"}
    assert batch.columns["failed"][:2] == [True, False]  # a 5 s EAI_AGAIN lookup, then a NOERROR answer


@pytest.mark.parametrize("payload", [b"", b"\x93\x01", encode_events([])[:-1]])
def test_codec_refuses_garbage(payload):
    with pytest.raises(BatchError):
        decode_batch(payload)


def test_codec_refuses_lying_counts_and_bad_attrs():
    good = encode_events(make_events("c", 3))
    with pytest.raises(BatchError):
        decode_batch(good, expected_count=4)
    import msgpack

    obj = msgpack.unpackb(encode_events(make_events("c", 3), version=1))
    obj["cols"]["attrs"][0] = '{"a":1}, {"b":2}'
    with pytest.raises(BatchError):
        decode_batch(msgpack.packb(obj), version=1)
    obj = msgpack.unpackb(good)  # version 2: attrs are dictionary-encoded
    obj["cols"]["attrs"]["d"][0] = '{"a":1}, {"b":2}'
    with pytest.raises(BatchError):
        decode_batch(msgpack.packb(obj, use_bin_type=True))
    obj["cols"]["attrs"]["d"][0] = '["not", "an object"]'
    with pytest.raises(BatchError):
        decode_batch(msgpack.packb(obj, use_bin_type=True), check_attrs_json=False)


def test_codec_v2_refuses_bad_codes_and_sizes():
    import msgpack

    good = msgpack.unpackb(encode_events(make_events("c", 4)))
    assert decode_batch(msgpack.packb(good, use_bin_type=True)).count == 4
    broken = [
        ("comm", "i", (7).to_bytes(4, "little") * 4),  # code past the dictionary
        ("comm", "i", (-2).to_bytes(4, "little", signed=True) * 4),
        ("comm", "i", b"\x00" * 15),  # not 4 int32
        ("ts", "v", b"\x00" * 31),
        ("pid", "m", b"\x01" * 3),
        ("ts", "m", b"\x01\x00\x01\x01"),  # a missing timestamp
        ("kind", "i", (-1).to_bytes(4, "little", signed=True) * 4),  # a missing kind
    ]
    for column, part, value in broken:
        obj = msgpack.unpackb(encode_events(make_events("c", 4)))
        obj["cols"][column][part] = value
        with pytest.raises(BatchError):
            decode_batch(msgpack.packb(obj, use_bin_type=True))
    obj = msgpack.unpackb(encode_events(make_events("c", 4)))
    obj["cols"]["comm"]["d"] = [b"bytes-not-text"]
    with pytest.raises(BatchError):
        decode_batch(msgpack.packb(obj, use_bin_type=True))
    obj = msgpack.unpackb(encode_events(make_events("c", 4)))
    del obj["cols"]["kind"]
    with pytest.raises(BatchError):
        decode_batch(msgpack.packb(obj, use_bin_type=True))


def test_codec_v1_and_v2_decode_to_the_same_columns():
    events = make_events("same", 40) + [{"kind": "x", "ts": BASE_TS + 5, "latency_ns": 2**63 - 1, "pid": -(2**63)}]
    one, two = decode_batch(encode_events(events, version=1), version=1), decode_batch(encode_events(events))
    assert one.columns == two.columns


def test_spool_replays_in_order_across_restart_and_cuts_torn_tail(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20, segment_bytes=200)
    for seq in range(1, 11):
        spool.append(_record(seq))
    got = spool.read(None, 4)
    assert [r.seq for _, r in got] == [1, 2, 3, 4]
    spool.ack(got[2][0])
    assert spool.pending() == (7, 70)
    spool.close()
    last = sorted(p for p in os.listdir(tmp_path))[-1]
    with open(tmp_path / last, "ab") as f:
        f.write(b"\x00\x00\x01\x00torn")  # a crash mid-write
    again = Spool(str(tmp_path), 1 << 20, segment_bytes=200)
    seqs = [r.seq for _, r in again.read(None, 100)]
    # Acked segments are gone; unacked ones (and acked ones sharing their segment) come back in order.
    assert seqs == sorted(seqs) and seqs[-1] == 10 and set(range(4, 11)) <= set(seqs)
    assert again.stats()["torn_records"] == 1
    again.append(_record(11))
    assert [r.seq for _, r in again.read(None, 100)][-1] == 11


def test_spool_evicts_oldest_first_and_counts(tmp_path):
    spool = Spool(str(tmp_path), max_bytes=2000, segment_bytes=500)
    for seq in range(1, 41):
        spool.append(_record(seq, n=10, size=60))
    stats = spool.stats()
    assert stats["bytes"] <= 2000
    assert stats["evicted_batches"] > 0 and stats["evicted_events"] == 10 * stats["evicted_batches"]
    assert stats["evicted_batches"] + stats["pending_batches"] == 40
    seqs = [r.seq for _, r in spool.read(None, 100)]
    assert seqs == list(range(41 - len(seqs), 41))  # the newest survive, in order
    assert sum(os.path.getsize(tmp_path / p) for p in os.listdir(tmp_path)) <= 2000


def test_embedded_collector_answers_dnstrace_query_on_its_socket(tmp_path):
    sock = f"unix:{tmp_path}/collector.sock"
    env = {"DNSTRACE_AGENT_EMBEDDED_LISTEN": sock, "DNSTRACE_AGENT_EMBEDDED_STORE": f"duckdb:{tmp_path}/e.duckdb",
           "DNSTRACE_AGENT_SPOOL_DIR": str(tmp_path / "spool"), "DNSTRACE_AGENT_HOST_ID": "solo",
           "DNSTRACE_AGENT_COLLECTOR": "", "DNSTRACE_CONFIG": ""}
    cfg = config_mod.load(None, None, environ=env)
    sink = make_sink(cfg)
    try:
        sink.handle(make_events("solo", 120))
        sink.flush()
        assert sink.wait_delivered(20), sink.stats()
        out = subprocess.run(DNSTRACE + ["query", "--since", "@0", "--kind", "dns", "--json"], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, **env))
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(rows) == 24 and all(r["host"] == "solo" and r["kind"] == "dns" for r in rows)
        table = subprocess.run(DNSTRACE + ["query", "--since", "@0", "--top", "3", "--by", "kind"],
                               capture_output=True, text=True, timeout=60, env=dict(os.environ, **env))
        assert table.returncode == 0 and table.stdout.startswith("KIND"), table.stderr
    finally:
        sink.close()


def test_generated_protobuf_code_is_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, str(REPO / "src" / "dnstrace" / "wire" / "gen_proto.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)

    def normalized(path: Path) -> list[str]:
        # Generator version stamps differ between grpcio-tools releases; the code must not.
        return [line for line in path.read_text().splitlines()
                if "_VERSION" not in line and "Protobuf Python Version" not in line
                and not line.strip().rstrip(",").isdigit()]

    for name in ("dnstrace_pb2.py", "dnstrace_pb2_grpc.py"):
        assert normalized(tmp_path / name) == normalized(REPO / "src" / "dnstrace" / "wire" / name), \
            f"src/dnstrace/wire/{name} is stale: run python src/dnstrace/wire/gen_proto.py"


def test_spool_fsyncs_in_groups_and_on_close(tmp_path):
    spool = Spool(str(tmp_path / "lazy"), 1 << 20, fsync_interval_s=3600)
    for seq in range(1, 6):
        spool.append(_record(seq))
    assert spool.stats()["fsyncs"] == 0  # appends alone do not flush the disk each time
    spool.sync()
    assert spool.stats()["fsyncs"] == 1
    spool.append(_record(6))
    spool.close()
    assert spool.stats()["fsyncs"] == 2  # close makes the tail durable
    eager = Spool(str(tmp_path / "eager"), 1 << 20, fsync_interval_s=0)
    eager.append(_record(1))
    eager.append(_record(2))
    assert eager.stats()["fsyncs"] == 2
    eager.close()
    assert [r.seq for _, r in Spool(str(tmp_path / "lazy"), 1 << 20).read(None, 10)] == [1, 2, 3, 4, 5, 6]


def test_spool_dir_has_the_issue_flag_name_as_alias():
    key = next(k for k in config_mod.KEYS if k.name == "agent.spool_dir")
    assert "--spool" in key.flag_aliases
