"""TLS, mutual TLS and the two bearer tokens: who may ingest, who may query, who is refused."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from collector_helpers import DNSTRACE, free_port
from recorded import make_events

from dnstrace.collector.server import CollectorServer
from dnstrace.collector.store.from_url import open_store
from dnstrace.errors import DnstraceError
from dnstrace.wire import dnstrace_pb2
from dnstrace.wire.client import CollectorClient
from dnstrace.wire.codec import SCHEMA_VERSION, encode_events
from dnstrace.wire.query import QuerySpec

INGEST_TOKEN, QUERY_TOKEN = "ingest-secret", "query-secret"


@pytest.fixture(scope="module")
def secure_collector(certs):
    store = open_store("duckdb::memory:")
    server = CollectorServer(store, "127.0.0.1:0", tls_cert=str(certs / "server.pem"),
                             tls_key=str(certs / "server.key"), tls_client_ca=str(certs / "ca.pem"),
                             ingest_token=INGEST_TOKEN, query_token=QUERY_TOKEN).start()
    yield server
    server.stop()
    store.close()


def _client(server, certs, who="client", token="", ca="ca"):
    return CollectorClient(server.address, ca=str(certs / f"{ca}.pem"),
                           cert=str(certs / f"{who}.pem") if who else "", key=str(certs / f"{who}.key") if who else "",
                           token=token, timeout_s=10)


def _ingest(client, seq=1):
    payload = encode_events(make_events("sec", 10))
    batch = dnstrace_pb2.Batch(schema_version=SCHEMA_VERSION, host_id="sec-host", boot_id="b", instance=1, seq=seq,
                               event_count=10, events=payload)
    return list(client.ingest_stream(iter([batch]), timeout_s=10))


def test_valid_certificate_and_tokens_work(secure_collector, certs):
    ingest = _client(secure_collector, certs, token=INGEST_TOKEN)
    acks = _ingest(ingest)
    assert len(acks) == 1 and acks[0].stored == 10
    query = _client(secure_collector, certs, token=QUERY_TOKEN)
    _, rows = query.query(QuerySpec(hosts=["sec-host"], limit=100))
    assert len(rows) == 10
    ingest.close()
    query.close()


def test_ingest_token_cannot_query_and_query_token_cannot_ingest(secure_collector, certs):
    ingest = _client(secure_collector, certs, token=INGEST_TOKEN)
    with pytest.raises(DnstraceError, match="refused"):
        ingest.query(QuerySpec(limit=1))
    query = _client(secure_collector, certs, token=QUERY_TOKEN)
    with pytest.raises(grpc.RpcError) as err:
        _ingest(query, seq=2)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = _client(secure_collector, certs, token="")
    with pytest.raises(grpc.RpcError) as err:
        _ingest(anonymous, seq=3)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert secure_collector.stats()["rejected_auth"] >= 2


@pytest.mark.parametrize("who", ["", "rogue-client"])
def test_client_without_valid_certificate_is_refused(secure_collector, certs, who):
    client = _client(secure_collector, certs, who=who, token=QUERY_TOKEN)
    with pytest.raises(DnstraceError):
        client.query(QuerySpec(limit=1))
    with pytest.raises(grpc.RpcError) as err:
        _ingest(_client(secure_collector, certs, who=who, token=INGEST_TOKEN), seq=4)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails


def test_plaintext_client_is_refused_by_tls_collector(secure_collector):
    client = CollectorClient(secure_collector.address, insecure=True, token=QUERY_TOKEN, timeout_s=5)
    with pytest.raises(DnstraceError):
        client.query(QuerySpec(limit=1))


def test_collector_refuses_plaintext_tcp_without_insecure(tmp_path):
    out = subprocess.run(DNSTRACE + ["collector", "--listen", f"127.0.0.1:{free_port()}", "--store",
                                     f"duckdb:{tmp_path}/x.duckdb"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to serve plaintext" in out.stderr and "Traceback" not in out.stderr


def test_query_cli_reports_refusal_in_one_line(secure_collector, certs):
    out = subprocess.run(DNSTRACE + ["query", "--collector", secure_collector.address, "--tls-ca",
                                     str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"), "--tls-key",
                                     str(certs / "client.key"), "--token", INGEST_TOKEN, "--since", "1d"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "refused" in out.stderr and "Traceback" not in out.stderr
    ok = subprocess.run(DNSTRACE + ["query", "--collector", secure_collector.address, "--tls-ca",
                                    str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"), "--tls-key",
                                    str(certs / "client.key"), "--token", QUERY_TOKEN, "--since", "@0", "--csv"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0].startswith("kind,ts,host")


def test_tls_refusals_are_named_not_reported_as_unreachable(secure_collector, certs):
    plaintext = CollectorClient(secure_collector.address, insecure=True, token=QUERY_TOKEN, timeout_s=10)
    no_client_cert = _client(secure_collector, certs, who="", token=QUERY_TOKEN)
    for client in (plaintext, no_client_cert):
        with pytest.raises(DnstraceError) as err:
            client.health()
        assert "unreachable" not in str(err.value), str(err.value)
        assert "TLS" in str(err.value) or "closed the connection" in str(err.value), str(err.value)
        client.close()
