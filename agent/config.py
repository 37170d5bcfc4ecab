"""Configuration: one TOML file, then DNSTRACE_* environment variables, then flags.

Every key is declared once in ``KEYS`` with its type, default and meaning; the
README's configuration table and ``dnstrace agent --print-config`` come from it.
Precedence (lowest to highest): default < file < environment < command-line flag.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass
from typing import Any, Callable

from dnstrace.errors import UsageError
from dnstrace.units import parse_duration_ns, parse_size

DEFAULT_CONFIG_PATH = "/etc/dnstrace/dnstrace.toml"


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError("expected true or false")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    return int(value)


def _duration(value: Any) -> int:
    return parse_duration_ns(value)


def _size(value: Any) -> int:
    return parse_size(value)


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("expected a list of strings (or a comma-separated string)")


def _int_list(value: Any) -> list[int]:
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    if isinstance(value, list):
        return [_int(v) for v in value]
    raise ValueError("expected a list of numbers")


@dataclass(frozen=True)
class Key:
    name: str  # "section.key" as in the TOML file
    parse: Callable[[Any], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "DNSTRACE_" + self.name.replace(".", "_").upper()


KEYS: tuple[Key, ...] = (
    # agent: what to trace
    Key("agent.host_id", _str, socket.gethostname(), "name of this node in the collector (default: hostname)"),
    Key("agent.signals", _str_list, ["lookups", "tcp", "drops", "conntrack"],
        "signals to trace (names of `dnstrace trace` targets; lookups = gai + dns + their join)"),
    Key("agent.dns_ports", _int_list, [53], "UDP/TCP ports traced as DNS (add 8600 for Consul)"),
    Key("agent.libc_rescan_interval", _duration, parse_duration_ns("30s"), "how often to look for new libcs"),
    Key("agent.conntrack_interval", _duration, parse_duration_ns("5s"), "conntrack counter poll interval"),
    # agent: where events go
    Key("agent.collector", _str, "", "HOST:PORT of a remote collector; empty = embedded collector"),
    Key("agent.spool_dir", _str, "/var/lib/dnstrace/spool", "on-disk spool while the collector is away"),
    Key("agent.spool_max_bytes", _size, parse_size("512MiB"), "spool size limit (oldest batches evicted)"),
    Key("agent.batch_max_events", _int, 5000, "ship a batch at this many events"),
    Key("agent.batch_interval", _duration, parse_duration_ns("1s"), "or after this long"),
    Key("agent.embedded_store", _str, "duckdb:/var/lib/dnstrace/dnstrace.duckdb", "store of the embedded collector"),
    Key("agent.embedded_listen", _str, "unix:/run/dnstrace/collector.sock", "where the embedded collector listens"),
    Key("agent.metrics_addr", _str, "", "HOST:PORT for Prometheus /metrics; empty = off"),
    Key("agent.health_addr", _str, "", "HOST:PORT for /healthz and /readyz; empty = off"),
    Key("agent.lock_file", _str, "/run/dnstrace/agent.lock", "one agent per node: held while running"),
    # transport security (agent -> collector)
    Key("agent.insecure", _bool, False, "plaintext to the collector (must be asked for explicitly)"),
    Key("agent.tls_ca", _str, "", "CA bundle that signed the collector's certificate"),
    Key("agent.tls_cert", _str, "", "client certificate (mutual TLS)"),
    Key("agent.tls_key", _str, "", "client key (mutual TLS)"),
    Key("agent.ingest_token", _str, "", "bearer token for ingest"),
    # collector
    Key("collector.listen", _str, "127.0.0.1:7053", "HOST:PORT (or unix:PATH) to serve gRPC on"),
    Key("collector.store", _str, "duckdb:/var/lib/dnstrace/collector.duckdb",
        "duckdb:PATH or clickhouse://HOST:PORT/DB"),
    Key("collector.retention", _duration, parse_duration_ns("7d"), "events older than this are deleted"),
    Key("collector.insecure", _bool, False, "serve plaintext (must be asked for explicitly)"),
    Key("collector.tls_cert", _str, "", "server certificate"),
    Key("collector.tls_key", _str, "", "server key"),
    Key("collector.tls_client_ca", _str, "", "CA for client certificates; set = mutual TLS required"),
    Key("collector.ingest_token", _str, "", "bearer token agents must present"),
    Key("collector.query_token", _str, "", "bearer token queries must present"),
    Key("collector.max_batch_bytes", _size, parse_size("64MiB"), "larger batches are refused"),
    # logging
    Key("log.format", _str, "console", "console or json"),
    Key("log.level", _str, "info", "debug, info, warning or error"),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}


class Config(dict):
    """Effective configuration: ``cfg["agent.collector"]``; ``sources`` tells where each value came from."""

    def __init__(self):
        super().__init__({key.name: key.default for key in KEYS})
        self.sources = {key.name: "default" for key in KEYS}

    def set(self, name: str, raw: Any, source: str) -> None:
        key = KEYS_BY_NAME.get(name)
        if key is None:
            raise UsageError(f"unknown configuration key {name!r} ({source})",
                             hint="see README, 'Configuration', for every key")
        try:
            self[name] = key.parse(raw)
        except (ValueError, TypeError, UsageError) as err:
            message = err.message if isinstance(err, UsageError) else str(err)
            raise UsageError(f"invalid value for {name} ({source}): {raw!r}: {message}") from None
        self.sources[name] = source


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for name, value in table.items():
        full = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def load(path: str | None = None, flags: dict[str, Any] | None = None,
         environ: dict[str, str] | None = None) -> Config:
    """Build the effective config. ``flags`` maps key names to values given on the command line
    (None = not given). A missing default config file is fine; a missing explicit one is an error."""
    config = Config()
    file_path = path or os.environ.get("DNSTRACE_CONFIG") or DEFAULT_CONFIG_PATH
    explicit = bool(path or os.environ.get("DNSTRACE_CONFIG"))
    if os.path.exists(file_path):
        try:
            with open(file_path, "rb") as f:
                table = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"config file {file_path} is not valid TOML: {err}") from None
        for name, value in _flatten(table).items():
            config.set(name, value, f"file {file_path}")
    elif explicit:
        raise UsageError(f"config file {file_path} does not exist")
    env = os.environ if environ is None else environ
    for key in KEYS:
        if key.env in env:
            config.set(key.name, env[key.env], f"env {key.env}")
    for name, value in (flags or {}).items():
        if value is not None:
            config.set(name, value, "flag")
    return config
