"""Transport security between agents, collector and query clients: TLS, mutual TLS, bearer tokens.

Policy (same for ``dnstrace agent``, ``collector`` and ``query``):
- TCP is TLS unless ``--insecure`` is given explicitly; a collector with no
  certificate and no ``--insecure`` refuses to start.
- A unix socket is local to the node and protected by file permissions (0660,
  root-owned): it is allowed without TLS. Tokens are still checked when set.
- A client CA on the collector makes client certificates mandatory (mutual TLS).
- Two bearer tokens: one for ingest, one for queries and health. Each is checked
  when configured; the ingest token never opens queries and vice versa.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dnstrace.errors import UsageError

INGEST_METHOD = "/dnstrace.v1.Collector/Ingest"
QUERY_METHODS = ("/dnstrace.v1.Collector/Query", "/dnstrace.v1.Collector/Health")


def is_unix(address: str) -> bool:
    return address.startswith("unix:")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror}") from None


def _pem_certificates(path: str, what: str) -> bytes:
    """The file's bytes, refused unless it holds PEM certificates that load (gRPC would fail later, silently)."""
    import ssl

    data = _read(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise UsageError(f"{what} {path} is not a PEM certificate file", hint="expected -----BEGIN CERTIFICATE-----")
    try:
        ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as err:
        raise UsageError(f"{what} {path} does not load: {err}") from None
    return data


def _check_key_pair(cert: str, key: str) -> None:
    """Certificate and key belong together, and the certificate is within its validity dates."""
    import ssl
    import time

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as err:
        reason = "the key does not match the certificate" if "mismatch" in str(err).lower() else str(err)
        raise UsageError(f"TLS certificate {cert} / key {key}: {reason}") from None
    except OSError as err:
        raise UsageError(f"cannot read TLS certificate or key: {err.strerror}") from None
    try:
        decoded = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]  # noqa: SLF001  (the stdlib's only certificate date reader)
    except Exception:
        return
    not_after, not_before = decoded.get("notAfter"), decoded.get("notBefore")
    now = time.time()
    if not_after and ssl.cert_time_to_seconds(not_after) < now:
        raise UsageError(f"TLS certificate {cert} expired on {not_after}", hint="agents refuse it: renew it")
    if not_before and ssl.cert_time_to_seconds(not_before) > now:
        raise UsageError(f"TLS certificate {cert} is not valid before {not_before}", hint="check the clock")


def server_credentials(listen: str, insecure: bool, cert: str, key: str, client_ca: str) -> Any:
    """grpc.ServerCredentials, or None for plaintext (allowed on unix sockets or with --insecure)."""
    import grpc

    if cert or key:
        if not (cert and key):
            raise UsageError("TLS needs both a certificate and a key", hint="--tls-cert and --tls-key")
        _check_key_pair(cert, key)
        root = _pem_certificates(client_ca, "client CA") if client_ca else None
        return grpc.ssl_server_credentials([(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
                                           root_certificates=root, require_client_auth=root is not None)
    if client_ca:
        raise UsageError("a client CA (mutual TLS) needs a server certificate too", hint="--tls-cert and --tls-key")
    if insecure or is_unix(listen):
        return None
    raise UsageError(f"refusing to serve plaintext on {listen}",
                     hint="give --tls-cert/--tls-key (and --tls-client-ca for mutual TLS), or --insecure to "
                          "accept plaintext explicitly")


def channel_credentials(address: str, insecure: bool, ca: str, cert: str, key: str) -> Any:
    """grpc.ChannelCredentials, or None for a plaintext channel."""
    import grpc

    if is_unix(address) and not (ca or cert):
        return None
    if insecure:
        return None
    if bool(cert) != bool(key):
        raise UsageError("a client certificate needs its key (and the other way round)")
    if cert:
        _check_key_pair(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=_pem_certificates(ca, "CA bundle") if ca else None,
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None,
    )


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _presented_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for name, value in metadata or ():
        # RFC 7235: the auth scheme is case-insensitive.
        if name == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def make_token_interceptor(ingest_token: str, query_token: str,
                           on_refused: Callable[[str, str], None] | None = None) -> Any:
    """A grpc.aio.ServerInterceptor enforcing the two tokens (either may be empty = not required).

    ``on_refused(reason, method)`` is called for each refused call (the server counts and logs it).
    """
    import grpc

    def refuse(code: Any, message: str, streaming_request: bool) -> Any:
        async def abort(_request: Any, context: Any) -> None:
            await context.abort(code, message)

        if streaming_request:
            return grpc.stream_stream_rpc_method_handler(abort)
        return grpc.unary_unary_rpc_method_handler(abort)

    class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no type information
        async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
            method = handler_call_details.method
            if method == INGEST_METHOD:
                wanted, streaming = ingest_token, True
            elif method in QUERY_METHODS:
                wanted, streaming = query_token, False
            else:
                return await continuation(handler_call_details)
            if not wanted:
                return await continuation(handler_call_details)
            presented = _presented_token(handler_call_details.invocation_metadata)
            if presented is None:
                if on_refused:
                    on_refused("no bearer token", method)
                return refuse(grpc.StatusCode.UNAUTHENTICATED, "a bearer token is required", streaming)
            if not hmac.compare_digest(presented.encode(), wanted.encode()):
                if on_refused:
                    on_refused("wrong token for this call", method)
                return refuse(grpc.StatusCode.PERMISSION_DENIED, "this token does not allow this call", streaming)
            return await continuation(handler_call_details)

    return TokenInterceptor()
