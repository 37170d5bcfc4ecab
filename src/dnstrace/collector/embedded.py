"""The single-node default: the collector inside the agent process.

A DuckDB store served on a local socket (``dnstrace query`` and ``top --collector``
reach it there), plus the web view when ``agent.web_listen`` is set. The agent's
shipper hands it batches directly (``admit`` / ``finish``), without gRPC.
"""

from __future__ import annotations

from typing import Any

from dnstrace import log
from dnstrace.collector.server import CollectorServer
from dnstrace.collector.server import from_config as server_from_config
from dnstrace.collector.store.from_url import open_store
from dnstrace.collector.web import start_web


class EmbeddedCollector:
    """A started store + server (+ web view); ``close`` stops them in reverse order."""

    def __init__(self, server: CollectorServer, web: Any = None):
        self.server = server
        self.store = server.store
        self.web = web

    def admit(self, message: Any) -> Any:
        return self.server.admit(message)

    def finish(self, pending: Any) -> tuple[bool, int]:
        return self.server.finish(pending)

    def close(self) -> None:
        if self.web:
            self.web.stop()
        self.server.stop()
        self.store.close()


def start(config: Any) -> EmbeddedCollector:
    """Open ``agent.embedded_store``, serve it on ``agent.embedded_listen`` (and the web view on ``agent.web_listen``)."""
    store = open_store(config["agent.embedded_store"], config["collector.retention"])
    try:
        server = server_from_config(store, config, config["agent.embedded_listen"])
        server.start()
    except Exception:
        store.close()
        raise
    try:
        web = start_web(config, store, config["agent.web_listen"])
    except Exception:
        server.stop()
        store.close()
        raise
    log.get("shipper").info("embedded collector serving", listen=server.address, store=store.describe())
    return EmbeddedCollector(server, web)
