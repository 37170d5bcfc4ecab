"""Property suite for what ingest stores and what readers get back, plus the operator-facing error paths.

Every hostile event (deep nesting, huge fields, extreme timestamps, hostile host ids)
is either stored and readable back through a query, or refused as a whole batch with
the refusal counted. The CLI and TLS mistakes an operator makes get one error line and
the documented exit code (2 usage/config, 3 node, 1 runtime), never a traceback.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from collector_helpers import DNSTRACE, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnstrace.cli.output import to_json
from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.from_url import open_store
from dnstrace.errors import UsageError
from dnstrace.wire import auth, dnstrace_pb2
from dnstrace.wire.codec import (
    MAX_ATTRS_DEPTH,
    SCHEMA_VERSION,
    TS_MAX_NS,
    TS_MIN_NS,
    BatchError,
    encode_events,
    row_to_event,
)
from dnstrace.wire.query import QuerySpec

BASE_TS = 1_700_000_000_000_000_000


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = {"x": value}
    return value


hostile_text = st.one_of(st.text(max_size=40), st.sampled_from(["\x00", "\x1b[31mred", "a\u202eb", " pad",
                                                                  "x" * 5000, "y" * 70_000]))
hostile_ts = st.one_of(st.integers(TS_MIN_NS, TS_MAX_NS - 1), st.sampled_from(
    [-1, 0, 1, 9_223_372_036_854_775_807, TS_MAX_NS, TS_MIN_NS - 1, BASE_TS]))
hostile_attr = st.one_of(st.integers(-(2**70), 2**70), st.floats(), hostile_text,
                         st.sampled_from([nested(5), nested(MAX_ATTRS_DEPTH - 1), nested(40), nested(1000)]))
events = st.lists(st.fixed_dictionaries({"kind": st.sampled_from(["gai", "dns", "new_kind"]), "ts": hostile_ts},
                                        optional={"comm": hostile_text, "name": hostile_text, "pid": st.integers(
                                            -(2**63), 2**63 - 1), "extra": hostile_attr}),
                  min_size=1, max_size=5)
host_ids = st.one_of(st.sampled_from(["host-a", "h\x00st", "\x1b[2Jhost", "h" * 256, "", " host", "hóst-ü"]),
                     st.text(min_size=1, max_size=20))


@pytest.fixture(scope="module")
def collector():
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", insecure=True)
    yield server
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_events=events, host=host_ids)
def test_each_batch_is_stored_and_readable_or_refused_and_counted(collector, batch_events, host):
    test_each_batch_is_stored_and_readable_or_refused_and_counted.seq += 1
    seq = test_each_batch_is_stored_and_readable_or_refused_and_counted.seq
    try:
        payload = encode_events(batch_events)
    except (ValueError, RecursionError, TypeError):
        return  # the agent's own encoder refuses it (the shipper counts encode_errors)
    batch = dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id=host, boot_id="b", instance=1, seq=seq,
                               event_count=len(batch_events), events=payload)
    before = collector.stats()["rejected_malformed"]
    try:
        stored, count = collector.accept(batch)
    except BatchError:
        assert collector.stats()["rejected_malformed"] == before + 1
        return
    assert stored and count == len(batch_events)
    assert all(TS_MIN_NS <= e["ts"] < TS_MAX_NS for e in batch_events)
    _, rows = collector.store.query(QuerySpec(hosts=[host], limit=1_000_000))
    assert len(rows) >= len(batch_events)
    for row in rows:
        json.dumps(row, default=str)  # readable all the way through


test_each_batch_is_stored_and_readable_or_refused_and_counted.seq = 0


def test_poison_attrs_nesting_is_refused_and_an_old_one_still_reads(collector):
    deep = {"kind": "gai", "ts": BASE_TS, "extra": nested(1000)}
    payload = encode_events([{"kind": "gai", "ts": BASE_TS, "extra": nested(40)}])
    with pytest.raises(BatchError, match="nests deeper"):
        collector.accept(dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id="deep", boot_id="b",
                                            instance=9, seq=1, event_count=1, events=payload))
    stored_before_this_version = "[" * 5000 + "]" * 5000
    event = row_to_event({"kind": "gai", "ts": BASE_TS, "attrs": '{"a":' + stored_before_this_version + "}"})
    assert event["attrs_unreadable"] is True and event["kind"] == "gai"
    assert deep["extra"]  # (the agent-side encoder itself recurses; the wire check is what protects)


@pytest.mark.parametrize("args", [["--since", "@1e30"], ["--since", "@inf"], ["--until", "@1e30"],
                                  ["--since", "@nan"], ["--pid", "99999999999999999999"], ["--bucket", "9999999999d"],
                                  ["--collector", "127.0.0.1:99999"], ["--min-latency", "1e300s"]])
def test_query_cli_refuses_out_of_range_values_with_one_line(args):
    proc = subprocess.run(DNSTRACE + ["query", "--collector", "127.0.0.1:1", "--insecure"] + args,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("dnstrace: error:")], proc.stderr


def test_json_never_prints_nan():
    assert to_json({"p50": float("nan"), "p99": float("inf"), "n": [1.5, float("-inf")]}) == \
        '{"p50":null,"p99":null,"n":[1.5,null]}'


def test_bearer_scheme_is_case_insensitive():
    assert auth._presented_token([("authorization", "bearer abc")]) == "abc"
    assert auth._presented_token([("authorization", "BEARER abc")]) == "abc"
    assert auth._presented_token([("authorization", "Basic abc")]) is None


def _openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_tls_mistakes_are_usage_errors(certs, tmp_path):
    with pytest.raises(UsageError, match="does not match") as err:
        auth.server_credentials("127.0.0.1:0", False, str(certs / "server.pem"), str(certs / "client.key"), "")
    assert err.value.exit_code == 2
    bad_ca = tmp_path / "ca.der"
    _openssl("x509", "-in", str(certs / "ca.pem"), "-outform", "DER", "-out", str(bad_ca))
    with pytest.raises(UsageError, match="not a PEM certificate"):
        auth.channel_credentials("127.0.0.1:1", False, str(bad_ca), "", "")
    key, cert = _expired_certificate(tmp_path)
    with pytest.raises(UsageError, match="expired"):
        auth.server_credentials("127.0.0.1:0", False, str(cert), str(key), "")


def _expired_certificate(tmp_path):
    """A self-signed certificate valid for one day in 2020 (openssl 3.0's req cannot backdate; cryptography can)."""
    import datetime

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=1))
                   .sign(private, hashes.SHA256()))
    key, cert = tmp_path / "old.key", tmp_path / "old.pem"
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


def test_collector_cli_reports_a_mismatched_key_as_usage(certs):
    proc = subprocess.run(DNSTRACE + ["collector", "--listen", f"127.0.0.1:{free_port()}", "--store", "duckdb::memory:",
                                      "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "client.key")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "does not match" in proc.stderr and "Traceback" not in proc.stderr


def test_auth_refusals_are_logged_and_counted():
    from structlog.testing import capture_logs

    from dnstrace.wire.client import CollectorClient

    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", insecure=True, query_token="q-secret").start()
    try:
        with capture_logs() as logs:
            _refused_twice(server)
        assert [(e["event"], e["reason"]) for e in logs if e["event"] == "call refused"] == [
            ("call refused", "no bearer token"), ("call refused", "wrong token for this call")]
        assert "q-secret" not in repr(logs)
        ok = CollectorClient(server.address, insecure=True, token="q-secret", timeout_s=10)
        ok.metadata = (("authorization", "bEaReR q-secret"),)  # the scheme is case-insensitive
        assert ok.health()["stats"]["rejected_auth"] == 2
        ok.close()
    finally:
        server.stop()
        store.close()


def _refused_twice(server):
    from dnstrace.errors import DnstraceError
    from dnstrace.wire.client import CollectorClient

    for token in ("", "wrong"):
        client = CollectorClient(server.address, insecure=True, token=token, timeout_s=10)
        with pytest.raises(DnstraceError, match="refused"):
            client.health()
        client.close()


def test_agent_with_a_non_pem_ca_refuses_to_start(tmp_path):
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("this is not a certificate\n")
    proc = subprocess.run(DNSTRACE + ["agent", "--collector", "127.0.0.1:1", "--tls-ca", str(not_pem),
                                      "--spool-dir", str(tmp_path / "spool")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a PEM certificate" in proc.stderr and "Traceback" not in proc.stderr
