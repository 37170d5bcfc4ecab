"""Every config key reaches the component that uses it.

The cases are driven by the key table (``config.KEYS``): a key without a probe here fails
``test_every_key_has_a_probe``, so a new key cannot be forgotten. Each probe sets one key to a value
that differs from its default, builds the component that consumes the key the way the agent,
collector or query command builds it, and reads back what that component received. Values are
literals, not taken from the table the loader reads.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dnstrace import config as config_mod
from dnstrace.wire import auth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Probe:
    """``value`` (as a user writes it), what the consumer must hold, and how to read that back."""

    def __init__(self, value: str, expect: Any, read: Callable[[config_mod.Config, Path], Any]):
        self.value, self.expect, self.read = value, expect, read


# --- consumers, built as the commands build them ------------------------------------------------

def _pipeline_sources(config, signal: str):
    from dnstrace.pipeline.runner import Pipeline

    return Pipeline(config, signals=[signal], sink_modules=()).make_signal_sources(signal)


def _remote_shipper(config, tmp: Path):
    from dnstrace.ship import shipper

    for key in ("agent.summary_slow", "agent.summary_sample"):  # read from the summarizer: summary mode on
        if config.sources[key] != "default":
            config.set("agent.ship", "summary", "test")
    if not config["agent.collector"]:
        config.set("agent.collector", "127.0.0.1:9", "test")
    if config.sources["agent.spool_dir"] == "default":
        config.set("agent.spool_dir", str(tmp / "spool"), "test")
    sink = shipper.make_sink(config)
    sink.close()  # stops its sender thread; the attributes read below stay
    return sink


def _embedded_server(config, tmp: Path):
    from dnstrace.collector import embedded

    for key, value in (("agent.embedded_store", f"duckdb:{tmp}/embedded.duckdb"),
                       ("agent.embedded_listen", f"unix:{tmp}/collector.sock")):
        if config.sources[key] == "default":
            config.set(key, value, "test")
    local = embedded.start(config)
    server = local.server
    try:
        return server, server.store.path, server.listen, server.max_batch_bytes, server._tokens, \
            server.store.retention_ns
    finally:
        local.close()


def _embedded(index: int) -> Callable:
    return lambda config, tmp: _embedded_server(config, tmp)[index]


def _server_credentials_args(config, tmp: Path, monkeypatch_box: list) -> tuple:
    """What the collector handed to the TLS layer (recorded at auth.server_credentials)."""
    seen: list[tuple] = []
    real = auth.server_credentials

    def record(listen, insecure, cert, key, client_ca):
        seen.append((listen, insecure, cert, key, client_ca))
        return None  # no files behind the paths: only what was handed over matters here

    monkeypatch_box[0].setattr(auth, "server_credentials", record)
    try:
        from dnstrace.collector.server import from_config

        from_config(_memory_store(), config, "127.0.0.1:0")
    finally:
        monkeypatch_box[0].setattr(auth, "server_credentials", real)
    return seen[0]


def _memory_store():
    from dnstrace.collector.store.from_url import open_store

    return open_store("duckdb::memory:")


def _channel_credentials_args(config, tmp: Path, monkeypatch_box: list) -> tuple:
    """What the agent's shipper handed to the TLS layer for the collector connection."""
    seen: list[tuple] = []
    real = auth.channel_credentials

    def record(address, insecure, ca, cert, key):
        seen.append((address, insecure, ca, cert, key))
        return None

    monkeypatch_box[0].setattr(auth, "channel_credentials", record)
    try:
        _collector_client(config, tmp)
    finally:
        monkeypatch_box[0].setattr(auth, "channel_credentials", real)
    return seen[0]


def _collector_client(config, tmp: Path):
    """The client the shipper's transport opens to its first collector (clients are made per replica)."""
    transport = _remote_shipper(config, tmp).transport
    client = transport._client(transport.endpoints()[0])
    client.close()
    return client


def _collector_metrics_address(config, tmp: Path):
    from dnstrace.collector import metrics

    http_server = metrics.serve(server=None, addr=config["collector.metrics_addr"])
    try:
        return http_server.server_address[:2]
    finally:
        http_server.shutdown()
        http_server.server_close()


def _http_status(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _embedded_web(config, tmp: Path) -> int:
    """The agent's embedded collector serves its web view where agent.web_listen says (no query token set: open)."""
    config.set("collector.insecure", True, "test")
    for key, value in (("agent.embedded_store", f"duckdb:{tmp}/embedded.duckdb"),
                       ("agent.embedded_listen", f"unix:{tmp}/collector.sock"), ("agent.spool_dir", str(tmp / "s"))):
        config.set(key, value, "test")
    from dnstrace.pipeline import shipping

    sink = shipping.make_sink(config)
    try:
        return _http_status(WEB_PORT)
    finally:
        sink.close()


def _collector_web(config, tmp: Path) -> int:
    from dnstrace.collector.web import start_web

    config.set("collector.insecure", True, "test")
    web = start_web(config, _memory_store(), config["collector.web_listen"])
    try:
        return _http_status(COLLECTOR_WEB_PORT)
    finally:
        web.stop()


def _query_token(config, tmp: Path) -> tuple:
    from dnstrace.wire.client import query_client

    client = query_client(config, "127.0.0.1:9")
    try:
        return client.metadata
    finally:
        client.close()


def _collector_listen(config, tmp: Path):
    from dnstrace.collector.server import from_config

    config.set("collector.insecure", True, "test")
    return from_config(_memory_store(), config, config["collector.listen"]).listen


def _metrics_address(config, tmp: Path):
    from dnstrace.sinks import metrics

    sink = metrics.make_sink(config)
    try:
        return sink.server.server_address[:2]
    finally:
        sink.close()


def _health_address(config, tmp: Path):
    from dnstrace.cli.agent import health_server

    health = health_server(config, pipeline=None)
    try:
        return health.address
    finally:
        health.close()


def _lock_path(config, tmp: Path):
    from dnstrace.cli.agent import node_lock

    lock = node_lock(config).acquire()
    try:
        return lock.path, Path(lock.path).exists()
    finally:
        lock.release()


def _logging(config, tmp: Path):
    import argparse
    import logging

    import structlog

    from dnstrace.cli.agent import config_from_args

    flags = {key: config[key] for key in ("log.format", "log.level")}
    args = argparse.Namespace(config=None, log_format=flags["log.format"], log_level=flags["log.level"])
    saved = structlog.get_config()
    try:
        config_from_args(args, "agent")
        renderer = structlog.get_config()["processors"][-1]
        return type(renderer).__name__, structlog.get_logger().is_enabled_for(logging.INFO)
    finally:  # the process-wide logging set-up must not leak into later tests
        structlog.configure(**saved)


METRICS_PORT = _free_port()
HEALTH_PORT = _free_port()
COLLECTOR_METRICS_PORT = _free_port()
WEB_PORT = _free_port()
COLLECTOR_WEB_PORT = _free_port()

# Each key: a non-default value and how to see it arrive. `box` carries pytest's monkeypatch.
PROBES: dict[str, Probe] = {
    "agent.host_id": Probe("node-17", "node-17", lambda c, t: _remote_shipper(c, t).host_id),
    "agent.signals": Probe("tcp,drops", ["tcp", "drops"],
                           lambda c, t: __import__("dnstrace.pipeline.runner", fromlist=["Pipeline"])
                           .Pipeline(c, sink_modules=()).signals),
    "agent.dns_ports": Probe("53,8600", [[53, 8600], [53, 8600]],
                             lambda c, t: [_pipeline_sources(c, "dns")[0].ports,
                                           _pipeline_sources(c, "lookups")[0].dns.ports]),
    "agent.libc_rescan_interval": Probe("2s", [2_000_000_000, 2_000_000_000],
                                        lambda c, t: [_pipeline_sources(c, "gai")[0].rescan_interval_ns,
                                                      _pipeline_sources(c, "lookups")[0].gai_sources[0]
                                                      .rescan_interval_ns]),
    "agent.conntrack_interval": Probe("7s", 7_000_000_000,
                                      lambda c, t: _pipeline_sources(c, "conntrack")[0].interval_ns),
    "agent.collector": Probe("127.0.0.1:7999", "127.0.0.1:7999",
                             lambda c, t: _remote_shipper(c, t).transport.address),
    "agent.spool_dir": Probe("@TMP/myspool", "@TMP/myspool", lambda c, t: _remote_shipper(c, t).spool.directory),
    "agent.spool_max_bytes": Probe("3MiB", 3 << 20, lambda c, t: _remote_shipper(c, t).spool.max_bytes),
    "agent.batch_max_events": Probe("1234", 1234, lambda c, t: _remote_shipper(c, t).batch_max_events),
    "agent.batch_interval": Probe("250ms", 250_000_000, lambda c, t: _remote_shipper(c, t).batch_interval_ns),
    "agent.embedded_store": Probe("duckdb:@TMP/other.duckdb", "@TMP/other.duckdb", _embedded(1)),
    "agent.embedded_listen": Probe("unix:@TMP/other.sock", "unix:@TMP/other.sock", _embedded(2)),
    "agent.metrics_addr": Probe(f"127.0.0.1:{METRICS_PORT}", ("127.0.0.1", METRICS_PORT), _metrics_address),
    "agent.health_addr": Probe(f"127.0.0.1:{HEALTH_PORT}", ("127.0.0.1", HEALTH_PORT), _health_address),
    "agent.lock_file": Probe("@TMP/run/agent.lock", ("@TMP/run/agent.lock", True), _lock_path),
    "agent.insecure": Probe("true", True, lambda c, t, box: _channel_credentials_args(c, t, box)[1]),
    "agent.tls_ca": Probe("/etc/x/ca.pem", "/etc/x/ca.pem", lambda c, t, box: _channel_credentials_args(c, t, box)[2]),
    "agent.tls_cert": Probe("/etc/x/c.pem", "/etc/x/c.pem", lambda c, t, box: _channel_credentials_args(c, t, box)[3]),
    "agent.tls_key": Probe("/etc/x/k.pem", "/etc/x/k.pem", lambda c, t, box: _channel_credentials_args(c, t, box)[4]),
    "agent.ingest_token": Probe("s3cret", (("authorization", "Bearer s3cret"),),
                                lambda c, t: _collector_client(c, t).metadata),
    "agent.collector_failback": Probe("90s", 90.0, lambda c, t: _remote_shipper(c, t).transport.failback_s),
    "agent.ship": Probe("summary", True, lambda c, t: _remote_shipper(c, t).summary is not None),
    "agent.summary_interval": Probe("5m", 300 * 10**9, lambda c, t: _remote_shipper(c, t).summary_interval_ns),
    "agent.summary_slow": Probe("2s", 2 * 10**9, lambda c, t: _remote_shipper(c, t).summary.slow_ns),
    "agent.summary_sample": Probe("7", 7, lambda c, t: _remote_shipper(c, t).summary.sample_every),
    "collector.metrics_addr": Probe(f"127.0.0.1:{COLLECTOR_METRICS_PORT}", ("127.0.0.1", COLLECTOR_METRICS_PORT),
                                    _collector_metrics_address),
    "collector.listen": Probe("127.0.0.1:7111", "127.0.0.1:7111", _collector_listen),
    "collector.store": Probe("duckdb:@TMP/c.duckdb", "@TMP/c.duckdb",
                             lambda c, t: __import__("dnstrace.collector.store.from_url", fromlist=["x"])
                             .open_store(c["collector.store"]).path),
    "collector.retention": Probe("3d", 3 * 86_400 * 10**9, _embedded(5)),
    "collector.insecure": Probe("true", True, lambda c, t, box: _server_credentials_args(c, t, box)[1]),
    "collector.tls_cert": Probe("/etc/x/s.pem", "/etc/x/s.pem",
                                lambda c, t, box: _server_credentials_args(c, t, box)[2]),
    "collector.tls_key": Probe("/etc/x/s.key", "/etc/x/s.key",
                               lambda c, t, box: _server_credentials_args(c, t, box)[3]),
    "collector.tls_client_ca": Probe("/etc/x/ca.pem", "/etc/x/ca.pem",
                                     lambda c, t, box: _server_credentials_args(c, t, box)[4]),
    "collector.ingest_token": Probe("in-tok", ("in-tok", ""), _embedded(4)),
    "collector.query_token": Probe("q-tok", ("", "q-tok"), _embedded(4)),
    "collector.max_batch_bytes": Probe("2MiB", 2 << 20, _embedded(3)),
    "agent.web_listen": Probe(f"127.0.0.1:{WEB_PORT}", 200, _embedded_web),
    "collector.web_listen": Probe(f"127.0.0.1:{COLLECTOR_WEB_PORT}", 200, _collector_web),
    "query.token": Probe("qt", (("authorization", "Bearer qt"),), _query_token),
    "log.format": Probe("json", ("JSONRenderer", True), _logging),
    "log.level": Probe("error", ("ConsoleRenderer", False), _logging),
}


def test_every_key_is_declared_once():
    names = [key.name for key in config_mod.KEYS]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_every_key_has_a_probe():
    missing = [key.name for key in config_mod.KEYS if key.name not in PROBES]
    stale = [name for name in PROBES if name not in config_mod.KEYS_BY_NAME]
    assert not missing, f"config keys without a probe (add one here): {missing}"
    assert not stale, f"probes for keys that no longer exist: {stale}"


@pytest.mark.parametrize("name", [key.name for key in config_mod.KEYS])
def test_key_reaches_its_consumer(name, tmp_path, monkeypatch):
    probe = PROBES[name]
    value = probe.value.replace("@TMP", str(tmp_path))
    expect = probe.expect
    if isinstance(expect, str):
        expect = expect.replace("@TMP", str(tmp_path))
    elif isinstance(expect, tuple):
        expect = tuple(e.replace("@TMP", str(tmp_path)) if isinstance(e, str) else e for e in expect)
    config = config_mod.load(None, {name: value}, environ={})
    assert config.sources[name] != "default"
    assert config[name] != config_mod.KEYS_BY_NAME[name].default, "the probe value must differ from the default"
    wants_box = len(inspect.signature(probe.read).parameters) == 3
    got = probe.read(config, tmp_path, [monkeypatch]) if wants_box else probe.read(config, tmp_path)
    assert got == expect
