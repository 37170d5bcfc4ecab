"""Configuration: one TOML file, then DNSTRACE_* environment variables, then flags.

Every key is declared once in ``KEYS`` with its type, default and meaning; the
README's configuration table and ``dnstrace agent --print-config`` come from it.
Precedence (lowest to highest): default < file < environment < command-line flag.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import socket
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("expected a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("expected a whole number") from None


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _duration(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 5s, 10m, 7d")
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().replace(".", "", 1).isdigit()):
        raise ValueError("a duration needs a unit, e.g. 5s or 500ms")
    ns = parse_duration_ns(value)
    if ns <= 0:
        raise ValueError("expected a duration above zero")
    return ns


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB")
    size = parse_size(value)
    if size <= 0:
        raise ValueError("expected a size above zero")
    return size


def _str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("expected a list of strings (or a comma-separated string)")


def _port(value: Any) -> int:
    port = _int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not a port number (1-65535)")
    return port


def _port_list(value: Any) -> list[int]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError("expected a list of port numbers")
    if not items:
        raise ValueError("expected at least one port")
    return [_port(v) for v in items]


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value.lower()

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def _host_port(value: Any, allow_empty: bool, allow_unix: bool, allow_any_host: bool = False) -> str:
    text = _str(value).strip()
    if not text and allow_empty:
        return ""
    if allow_unix and text.startswith("unix:"):
        if len(text) <= len("unix:"):
            raise ValueError("unix: needs a socket path")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not (host or allow_any_host):
        raise ValueError("expected HOST:PORT" + (" or unix:PATH" if allow_unix else ""))
    _port(port)
    return text


def _listen_addr(value: Any) -> str:
    """HOST:PORT (":PORT" = every address), or empty to switch the feature off."""
    return _host_port(value, allow_empty=True, allow_unix=False, allow_any_host=True)


def _collector_addr(value: Any) -> str:
    """HOST:PORT or unix:PATH, several separated by commas (replicas), or empty (embedded collector)."""
    items = _str_list(value)
    return ",".join(_host_port(item, allow_empty=False, allow_unix=True) for item in items)


def _serve_addr(value: Any) -> str:
    return _host_port(value, allow_empty=False, allow_unix=True)


def _store_url(value: Any) -> str:
    text = _str(value)
    if not (text.startswith("duckdb:") or text.startswith("clickhouse://")):
        raise ValueError("expected duckdb:PATH or clickhouse://HOST:PORT/DB")
    return text


@dataclass(frozen=True)
class Key:
    name: str  # "section.key" as in the TOML file
    parse: Callable[[Any], Any]
    default: Any
    help: str
    flag_aliases: tuple[str, ...] = ()  # extra spellings of the generated flag, e.g. ("--spool",)

    @property
    def env(self) -> str:
        return "DNSTRACE_" + self.name.replace(".", "_").upper()


KEYS: tuple[Key, ...] = (
    # agent: what to trace
    Key("agent.host_id", _str, socket.gethostname(), "name of this node in the collector (default: hostname)"),
    Key("agent.signals", _str_list, ["lookups", "tcp", "drops", "conntrack"],
        "signals to trace (names of `dnstrace trace` targets; lookups = gai + dns + their join)"),
    Key("agent.dns_ports", _port_list, [53], "UDP/TCP ports traced as DNS (add 8600 for Consul)"),
    Key("agent.libc_rescan_interval", _duration, parse_duration_ns("30s"), "how often to look for new libcs"),
    Key("agent.conntrack_interval", _duration, parse_duration_ns("5s"), "conntrack counter poll interval"),
    # agent: where events go
    Key("agent.collector", _collector_addr, "",
        "HOST:PORT (or unix:PATH) of a remote collector, several comma-separated for replicas (a name resolving to "
        "several addresses counts as several); empty = embedded collector"),
    Key("agent.collector_failback", _duration, parse_duration_ns("30s"),
        "while streaming to a replica other than this agent's preferred one, retry the preferred one this often"),
    Key("agent.ship", _choice("all", "summary"), "all",
        "all = every event raw; summary = per-interval rollups plus raw events only for what an incident needs"),
    Key("agent.summary_interval", _duration, parse_duration_ns("1m"), "summary mode: ship rollups this often"),
    Key("agent.summary_slow", _duration, parse_duration_ns("100ms"),
        "summary mode: events at least this slow are shipped raw"),
    Key("agent.summary_sample", _positive_int, 100,
        "summary mode: also ship 1 in N of the healthy events raw (at most 1000 per interval)"),
    Key("agent.spool_dir", _str, "/var/lib/dnstrace/spool", "on-disk spool while the collector is away",
        flag_aliases=("--spool",)),
    Key("agent.spool_max_bytes", _size, parse_size("512MiB"), "spool size limit (oldest batches evicted)"),
    Key("agent.batch_max_events", _positive_int, 5000, "ship a batch at this many events"),
    Key("agent.batch_interval", _duration, parse_duration_ns("1s"), "or after this long"),
    Key("agent.embedded_store", _store_url, "duckdb:/var/lib/dnstrace/dnstrace.duckdb", "store of the embedded collector"),
    Key("agent.embedded_listen", _serve_addr, "unix:/run/dnstrace/collector.sock", "where the embedded collector listens"),
    Key("agent.metrics_addr", _listen_addr, "", "HOST:PORT (:PORT = all addresses) for Prometheus /metrics; empty = off"),
    Key("agent.health_addr", _listen_addr, "", "HOST:PORT (:PORT = all addresses) for /healthz and /readyz; empty = off"),
    Key("agent.web_listen", _listen_addr, "", "HOST:PORT for the embedded collector's read-only web view (collector.* TLS "
        "and query token); empty = off"),
    Key("agent.lock_file", _str, "/run/dnstrace/agent.lock", "one agent per node: held while running"),
    # transport security (agent -> collector)
    Key("agent.insecure", _bool, False, "plaintext to the collector (must be asked for explicitly)"),
    Key("agent.tls_ca", _str, "", "CA bundle that signed the collector's certificate"),
    Key("agent.tls_cert", _str, "", "client certificate (mutual TLS)"),
    Key("agent.tls_key", _str, "", "client key (mutual TLS)"),
    Key("agent.ingest_token", _str, "", "bearer token for ingest"),
    # collector
    Key("collector.listen", _serve_addr, "127.0.0.1:7053", "HOST:PORT (or unix:PATH) to serve gRPC on"),
    Key("collector.store", _store_url, "duckdb:/var/lib/dnstrace/collector.duckdb",
        "duckdb:PATH or clickhouse://HOST:PORT/DB"),
    Key("collector.retention", _duration, parse_duration_ns("7d"), "events older than this are deleted"),
    Key("collector.insecure", _bool, False, "serve plaintext (must be asked for explicitly)"),
    Key("collector.tls_cert", _str, "", "server certificate"),
    Key("collector.tls_key", _str, "", "server key"),
    Key("collector.tls_client_ca", _str, "", "CA for client certificates; set = mutual TLS required"),
    Key("collector.ingest_token", _str, "", "bearer token agents must present"),
    Key("collector.query_token", _str, "", "bearer token queries must present"),
    Key("collector.metrics_addr", _listen_addr, "",
        "HOST:PORT (:PORT = all addresses) for the collector's Prometheus /metrics "
        "(streams, refusals, queries, ingest queue, hosts behind); empty = off"),
    Key("collector.web_listen", _listen_addr, "", "HOST:PORT for the read-only web view (same TLS and query token "
        "as gRPC); empty = off"),
    Key("collector.max_batch_bytes", _size, parse_size("64MiB"), "larger batches are refused"),
    Key("query.token", _str, "", "bearer token `dnstrace query` presents (the collector's query token)"),
    # logging
    Key("log.format", _choice("console", "json"), "console", "console or json"),
    Key("log.level", _choice("debug", "info", "warning", "error"), "info", "debug, info, warning or error"),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}


ENV_PREFIXES = tuple("DNSTRACE_" + section.upper() + "_" for section in sorted({k.name.split(".")[0] for k in KEYS}))


class Config(dict):
    """Effective configuration: ``cfg["agent.collector"]``; ``sources`` tells where each value came from."""

    def __init__(self) -> None:
        super().__init__({key.name: copy.copy(key.default) for key in KEYS})
        self.sources = {key.name: "default" for key in KEYS}
        self.path: str | None = None  # the TOML file read, if any

    def set(self, name: str, raw: Any, source: str) -> None:
        key = KEYS_BY_NAME.get(name)
        if key is None:
            close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1)
            raise UsageError(f"unknown configuration key {name!r} ({source})",
                             hint=f"did you mean {close[0]!r}?" if close
                             else "see README, 'Configuration', for every key")
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
    """Build the effective config: defaults < file < DNSTRACE_* environment < ``flags``.

    ``flags`` maps key names to values given on the command line (None = not given).
    The file is ``path``, else $DNSTRACE_CONFIG, else /etc/dnstrace/dnstrace.toml; a
    missing default file is fine, a missing file that was asked for is an error.
    """
    env = os.environ if environ is None else environ
    config = Config()
    file_path = path or env.get("DNSTRACE_CONFIG") or DEFAULT_CONFIG_PATH
    explicit = bool(path or env.get("DNSTRACE_CONFIG"))
    if os.path.exists(file_path) or explicit:
        try:
            with open(file_path, "rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise UsageError(f"config file {file_path} does not exist") from None
        except OSError as err:
            raise UsageError(f"config file {file_path} cannot be read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"config file {file_path} is not valid TOML: {err}") from None
        config.path = file_path
        for name, value in _flatten(table).items():
            config.set(name, value, f"file {file_path}")
    else:
        config.path = None
    known_env = {key.env for key in KEYS}
    for var in sorted(env):
        if var.startswith(ENV_PREFIXES) and var not in known_env:
            close = difflib.get_close_matches(var, known_env, n=1)
            raise UsageError(f"unknown configuration variable {var} in the environment",
                             hint=f"did you mean {close[0]}?" if close
                             else "see README, 'Configuration', for every key")
    for key in KEYS:
        if key.env in env:
            config.set(key.name, env[key.env], f"env {key.env}")
    for name, value in (flags or {}).items():
        if value is not None:
            config.set(name, value, "flag")
    return config


# --- rendering: --print-config and the README table -----------------------------------

_DURATION_STEPS = (("d", 86400 * 10**9), ("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9),
                   ("ms", 10**6), ("us", 10**3), ("ns", 1))
_SIZE_STEPS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _exact_duration(ns: int) -> str:
    for unit, size in _DURATION_STEPS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def _exact_size(size: int) -> str:
    for unit, step in _SIZE_STEPS:
        if size % step == 0:
            return f"{size // step}{unit}"
    return str(size)


def format_value(key: Key, value: Any) -> str:
    """The value as a TOML literal that parses back to the same value."""
    if key.parse is _duration:
        return json.dumps(_exact_duration(value))
    if key.parse is _size:
        return json.dumps(_exact_size(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str, list)):
        return json.dumps(value, ensure_ascii=False)  # JSON strings, ints and lists are TOML too
    raise TypeError(f"cannot render {key.name}={value!r}")


def render_toml(config: Config, show_sources: bool = True) -> str:
    """The effective configuration as a TOML file (``--print-config``); secrets are masked."""
    lines: list[str] = []
    section = None
    for key in KEYS:
        key_section, name = key.name.split(".", 1)
        if key_section != section:
            if lines:
                lines.append("")
            lines.append(f"[{key_section}]")
            section = key_section
        value = config[key.name]
        text = format_value(key, value)
        if key.name.endswith(SECRET_SUFFIXES) and value:
            text = json.dumps("<set, hidden>")
        comment = f"  # {config.sources[key.name]}" if show_sources else ""
        lines.append(f"{name} = {text}{comment}")
    return "\n".join(lines) + "\n"


SECRET_SUFFIXES = ("_token",)


def default_text(key: Key) -> str:
    if key.name == "agent.host_id":
        return "the hostname"
    return format_value(key, key.default)


def markdown_table(section: str | None = None) -> str:
    """The README's configuration table, one row per key, straight from ``KEYS``."""
    rows = ["| key | environment variable | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        if section and not key.name.startswith(section + "."):
            continue
        meaning = key.help.replace("|", "\\|")
        choices = getattr(key.parse, "choices", None)
        if choices and not all(c in meaning for c in choices):
            meaning += " (" + ", ".join(choices) + ")"
        rows.append(f"| `{key.name}` | `{key.env}` | `{default_text(key)}` | {meaning} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    """``python -m dnstrace.config`` prints the README table (to paste after a KEYS change)."""
    print(markdown_table(), end="")


if __name__ == "__main__":
    main()
