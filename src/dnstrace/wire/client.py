"""A small Python client for the collector: queries, health and the ingest stream.

Used by ``dnstrace query``, the fleet view of ``dnstrace top --collector ADDR``
and the agent's shipper::

    client = CollectorClient("collector:7053", ca="ca.pem", token=QUERY_TOKEN)
    columns, rows = client.query(QuerySpec(mode="top", kinds=["gai"], since_ns=...))
    client.close()

Errors come back as ``DnstraceError`` with the collector's message (refused token,
bad filter, unreachable address), never as raw gRPC exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgpack

from dnstrace.errors import DnstraceError, UsageError
from dnstrace.wire import auth
from dnstrace.wire.query import QuerySpec

if TYPE_CHECKING:
    from dnstrace.config import Config


def grpc_target(address: str) -> str:
    """``HOST:PORT`` or ``unix:PATH`` as grpc wants it."""
    if auth.is_unix(address):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise UsageError(f"collector address {address!r} lacks a port", hint="HOST:PORT or unix:PATH")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"collector address {address!r}: port must be 1..65535", hint="HOST:PORT or unix:PATH")
    return address


_TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "x509")


class CollectorClient:
    def __init__(self, address: str, *, insecure: bool = False, ca: str = "", cert: str = "", key: str = "",
                 token: str = "", timeout_s: float = 30.0, server_name: str = ""):
        import grpc

        from dnstrace.wire import dnstrace_pb2_grpc

        self.address = address
        self.timeout_s = timeout_s
        self.metadata = auth.token_metadata(token)
        # Reconnect soon after a collector comes back (gRPC's default backoff grows to two minutes): the
        # shipper's failback to a restarted replica waits on this.
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        credentials = auth.channel_credentials(address, insecure, ca, cert, key)
        target = grpc_target(address)
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = dnstrace_pb2_grpc.CollectorStub(self.channel)

    def _error(self, err: Exception) -> DnstraceError:
        import grpc

        code: Any = err.code() if hasattr(err, "code") else None
        details: str | None = err.details() if hasattr(err, "details") else str(err)
        text = (details or "").lower()
        if code == grpc.StatusCode.UNAVAILABLE and any(word in text for word in _TLS_WORDS):
            return DnstraceError(f"TLS with collector {self.address} failed: {details}",
                                 hint="check --tls-ca (the CA that signed the collector's certificate), the "
                                      "client certificate and key for mutual TLS, and the certificate's dates")
        if code == grpc.StatusCode.UNAVAILABLE and ("socket closed" in text or "connection reset" in text
                                                    or "unexpected eof" in text):
            return DnstraceError(f"collector {self.address} closed the connection: {details}",
                                 hint="a TLS collector refuses plaintext (give --tls-ca) and a mutual-TLS one "
                                      "refuses clients without a certificate (--tls-cert/--tls-key)")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DnstraceError(f"collector {self.address}: DEADLINE_EXCEEDED: {details}",
                                 hint="narrow the time range or filters")
        if code == grpc.StatusCode.UNAVAILABLE:
            return DnstraceError(f"collector {self.address} is unreachable: {details}",
                                 hint="is `dnstrace collector` (or the agent's embedded collector) running there? "
                                      "plaintext needs --insecure; TLS needs --tls-ca")
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return DnstraceError(f"collector {self.address} refused the request: {details}",
                                 hint="give the query token (--token or DNSTRACE_QUERY_TOKEN)")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return UsageError(f"collector refused the query: {details}")
        name = code.name if code is not None else "error"
        return DnstraceError(f"collector {self.address}: {name}: {details}")

    def query(self, spec: QuerySpec) -> tuple[list[str], list[dict[str, Any]]]:
        import grpc

        from dnstrace.wire import dnstrace_pb2

        spec.validate()
        try:
            response = self.stub.Query(spec.to_request(dnstrace_pb2.QueryRequest), timeout=self.timeout_s,
                                       metadata=self.metadata)
        except grpc.RpcError as err:
            raise self._error(err) from None
        rows: list[dict[str, Any]] = msgpack.unpackb(response.rows, raw=False) if response.rows else []
        return list(response.columns), rows

    def health(self) -> dict[str, Any]:
        import grpc

        from dnstrace.wire import dnstrace_pb2

        try:
            response = self.stub.Health(dnstrace_pb2.HealthRequest(), timeout=self.timeout_s, metadata=self.metadata)
        except grpc.RpcError as err:
            raise self._error(err) from None
        return {"status": response.status, "store": response.store, "schema_version": response.schema_version,
                "stats": msgpack.unpackb(response.stats, raw=False) if response.stats else {}}

    def ingest_stream(self, batches: Iterable[Any], timeout_s: float | None = None) -> Any:
        """Bidirectional ingest: ``batches`` yields ``Batch`` messages; returns the Ack iterator.

        Raises ``grpc.RpcError`` (not wrapped): the shipper needs the status code."""
        return self.stub.Ingest(batches, metadata=self.metadata, timeout=timeout_s)

    def close(self) -> None:
        self.channel.close()


def query_client(config: Config, address: str, token: str | None = None) -> CollectorClient:
    """A client for queries (`query`, fleet `top`): TLS from the ``agent.*`` transport keys, the token
    given on the command line or else ``query.token``."""
    return CollectorClient(address, insecure=config["agent.insecure"], ca=config["agent.tls_ca"],
                           cert=config["agent.tls_cert"], key=config["agent.tls_key"],
                           token=token or config["query.token"])
