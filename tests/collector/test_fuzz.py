"""Hostile ingest: garbage bytes, wrong structures, wrong types, lies about sizes. Clean statuses, no crash."""

from __future__ import annotations

import grpc
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recorded import make_events

from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.from_url import open_store
from dnstrace.wire import dnstrace_pb2
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.codec import COLUMN_NAMES, SCHEMA_VERSION, BatchError, decode_batch, encode_events

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


@st.composite
def hostile_payloads(draw):
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return msgpack.packb(draw(values), use_bin_type=True)
    # Near-valid columnar batches with one thing wrong.
    n = draw(st.integers(0, 5))
    names = draw(st.lists(st.sampled_from(COLUMN_NAMES + ("bogus",)), max_size=6, unique=True))
    cols = {name: draw(st.lists(scalars, min_size=0, max_size=6)) for name in names}
    if choice == 3:
        cols["ts"] = draw(st.lists(st.integers(-(2**63), 2**64 - 1), min_size=n, max_size=n))
        cols["kind"] = draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))
        cols["attrs"] = draw(st.lists(st.one_of(st.none(), st.text(max_size=12),
                                                st.sampled_from(["{}", "{}, {}", "[1]", "{\"a\":", "1],[2"])),
                                      min_size=n, max_size=n))
    return msgpack.packb({"n": draw(st.one_of(st.just(n), st.integers(-(2**63), 2**64 - 1), st.text(max_size=3))), "cols": cols},
                         use_bin_type=True)


@st.composite
def hostile_v2_payloads(draw):
    """Version 2 batches (packed buffers, dictionaries) with sizes, codes and types drawn at random."""
    n = draw(st.integers(0, 5))
    cols = {}
    for name in draw(st.lists(st.sampled_from(COLUMN_NAMES + ("bogus",)), max_size=8, unique=True)):
        shape = draw(st.integers(0, 3))
        if shape == 0:
            cols[name] = draw(scalars)
        elif shape == 1:
            cols[name] = {"v": draw(st.binary(max_size=48)), **({"m": draw(st.binary(max_size=6))}
                                                               if draw(st.booleans()) else {})}
        elif shape == 2:
            cols[name] = {"d": draw(st.lists(st.one_of(st.text(max_size=6), st.binary(max_size=4),
                                                       st.integers(-(2**63), 2**64 - 1),
                                                       st.sampled_from(["{}", "{\"a\":1}", "{]", "{}, {}"])),
                                             max_size=4)),
                          "i": draw(st.binary(max_size=24))}
        else:
            cols[name] = draw(st.binary(max_size=6))
    n_value = draw(st.one_of(st.just(n), st.integers(-3, 2**40)))
    return msgpack.packb({"n": n_value, "cols": cols}, use_bin_type=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(hostile_payloads(), hostile_v2_payloads()), st.sampled_from([1, 2]), st.booleans())
def test_decoder_only_raises_batch_error(payload, version, check_json):
    try:
        batch = decode_batch(payload, version=version, check_attrs_json=check_json)
    except BatchError:
        return
    assert all(len(v) == batch.count for v in batch.columns.values())
    assert batch.arrow_table().num_rows == batch.count


@pytest.fixture(scope="module")
def server():
    store = open_store("duckdb::memory:")
    srv = CollectorServer(store, "127.0.0.1:0", insecure=True, max_batch_bytes=64 << 10).start()
    yield srv
    srv.stop()
    store.close()


@pytest.fixture(scope="module")
def client(server):
    c = CollectorClient(server.address, insecure=True, timeout_s=10)
    yield c
    c.close()


def _send(client, batch):
    return list(client.ingest_stream(iter([batch]), timeout_s=10))


envelopes = st.fixed_dictionaries({
    "schema_version": st.one_of(st.just(SCHEMA_VERSION), st.integers(0, 2**32 - 1)),
    "host_id": st.one_of(st.just("fuzz"), st.text(max_size=300)),
    "boot_id": st.one_of(st.just("b"), st.text(max_size=80)),
    "instance": st.integers(0, 2**64 - 1),
    "seq": st.integers(0, 2**64 - 1),
    "event_count": st.integers(0, 2**32 - 1),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(envelopes, hostile_payloads())
def test_hostile_batches_get_clean_statuses(server, client, envelope, payload):
    before = server.store.stats()["events_stored"]
    try:
        acks = _send(client, dnstrace_pb2.Batch(events=payload, **envelope))
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), err.details()
        assert server.store.stats()["events_stored"] == before  # nothing half-stored
        return
    assert len(acks) == 1


def test_oversized_wrong_version_and_garbage_protobuf(server, client):
    before = server.stats()  # the server is shared by this module's tests: count this test's rejections
    big = encode_events(make_events("big", 2000))
    assert len(big) > 64 << 10
    with pytest.raises(grpc.RpcError) as err:
        _send(client, dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id="h", boot_id="b", instance=1, seq=1,
                                         event_count=2000, events=big))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exceeds" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        _send(client, dnstrace_pb2.Batch(schema_version=99, host_id="h", boot_id="b", instance=1, seq=1,
                                         event_count=0, events=encode_events([])))
    assert "schema version" in err.value.details()
    raw = client.channel.stream_stream("/dnstrace.v1.Collector/Ingest", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError):
        list(raw(iter([b"\xff\x00garbage-not-protobuf"]), timeout=10))
    stats = server.stats()
    assert stats["rejected_oversized"] - before["rejected_oversized"] == 1
    assert stats["rejected_version"] - before["rejected_version"] == 1
    # Still serving, and a good batch is still accepted afterwards.
    good = encode_events(make_events("ok", 5))
    acks = _send(client, dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id="after-fuzz", boot_id="b",
                                            instance=1, seq=1, event_count=5, events=good))
    assert acks[0].stored == 5
    assert client.health()["status"] == "serving"
