"""Liveness and readiness over HTTP for systemd watchers, Kubernetes probes and Nomad checks.

``GET /healthz`` (liveness): 200 while the agent's event loop keeps turning (it
ticks about once a second); 503 if it has been stuck for ``stall_after_s``
(a wedged agent should be restarted). Compiling the BPF programs at start-up can
take tens of seconds: that counts as alive.
``GET /readyz`` (readiness): 200 once every signal that can start is attached,
503 before that and while shutting down. Both answer a small JSON body with the
attached and failed signals. Served from a daemon thread; ``close()`` stops it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dnstrace.errors import UsageError

STALL_AFTER_S = 30.0


def split_host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class HealthServer:
    """Serves /healthz and /readyz about a ``Pipeline`` on ``addr`` (HOST:PORT)."""

    def __init__(self, addr: str, pipeline, stall_after_s: float = STALL_AFTER_S):
        self.pipeline = pipeline
        self.stall_after_s = stall_after_s
        host, port = split_host_port(addr)
        server_cls: type[ThreadingHTTPServer] = ThreadingHTTPServer
        if ":" in host:  # IPv6 literal
            import socket  # noqa: PLC0415

            server_cls = type("HealthServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        try:
            self.httpd = server_cls((host, port), self._handler())
        except OSError as err:
            raise UsageError(f"agent.health_addr {addr}: cannot listen: {err.strerror}") from None
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: it would hang if never started
            self.httpd.shutdown()
        self.httpd.server_close()

    def state(self) -> dict:
        pipeline = self.pipeline
        stalled_s = time.monotonic() - pipeline.last_loop_monotonic
        return {
            "alive": not (pipeline.ready.is_set() and stalled_s > self.stall_after_s),
            "ready": pipeline.ready.is_set(),
            "attached": list(pipeline.attached_signals),
            "failed": dict(pipeline.failed_signals),
            "loop_idle_s": round(stalled_s, 1),
        }

    def _handler(self):
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                state = health.state()
                if path in ("/healthz", "/livez"):
                    ok = state["alive"]
                elif path == "/readyz":
                    ok = state["ready"] and state["alive"]
                else:
                    self._send(404, {"error": "not found", "paths": ["/healthz", "/readyz"]})
                    return
                self._send(200 if ok else 503, dict(state, status="ok" if ok else "unavailable"))

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode() + b"\n"
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # probes every few seconds must not fill the log
                pass

        return Handler


def notify_systemd(state: str) -> bool:
    """sd_notify(3) without libsystemd: tell a ``Type=notify`` unit "READY=1" / "STOPPING=1".

    Does nothing (returns False) when not started by systemd.
    """
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415

    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
        return True
    except OSError:
        return False
