"""``dnstrace agent``: the long-running tracer of a node, as systemd, Kubernetes or Nomad runs it.

Loads the configuration (file < DNSTRACE_* environment < flags; ``--print-config``
shows the result and where each value came from), takes the node's single-agent
lock, serves /healthz and /readyz if asked, runs the ``Pipeline`` (every configured
signal -> enrichment -> the findings engine as a stage -> shipper and metrics sinks:
finding events are shipped like any other, and the metrics sink shows the active
set as ``dnstrace_findings_active``) until SIGTERM/SIGINT, then
detaches every probe and flushes the spool. Every ``agent.*`` config key has a flag
of the same name (``agent.spool_dir`` -> ``--spool-dir``), generated from ``KEYS``.
"""

from __future__ import annotations

import argparse

from dnstrace import config as config_mod
from dnstrace import log
from dnstrace.log import status
from dnstrace.units import parse_duration_s

# Top-level CLI options (dnstrace/cli/main.py) that mirror config keys.
TOP_LEVEL_FLAGS = {"log.format": "log_format", "log.level": "log_level"}


def flag_name(key_name: str) -> str:
    """``agent.spool_dir`` -> ``--spool-dir``."""
    return "--" + key_name.split(".", 1)[1].replace("_", "-")


def flag_dest(key_name: str) -> str:
    return "cfg_" + key_name.replace(".", "_")


# The keys that shape what is traced (not where it is shipped): enough for `dnstrace findings`.
TRACING_KEYS = ("agent.host_id", "agent.signals", "agent.dns_ports", "agent.libc_rescan_interval",
                "agent.conntrack_interval")


def add_config_arguments(parser: argparse.ArgumentParser, section: str = "agent",
                         only: tuple[str, ...] | None = None) -> None:
    """``--config`` plus one flag per key of ``section`` (for agent, top, findings); ``only`` narrows
    the flags to those keys (the config file and environment still set every key)."""
    parser.add_argument("--config", metavar="PATH", default=None,
                        help=f"TOML config file (default: $DNSTRACE_CONFIG or {config_mod.DEFAULT_CONFIG_PATH}, "
                             "if it exists)")
    group = parser.add_argument_group(f"{section} configuration (each overrides its config key and variable)")
    for key in config_mod.KEYS:
        if not key.name.startswith(section + ".") or (only is not None and key.name not in only):
            continue
        help_text = f"{key.help} [{key.name}, ${key.env}; default {config_mod.default_text(key)}]"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if key.parse is config_mod._bool:
            group.add_argument(flag_name(key.name), *key.flag_aliases, dest=flag_dest(key.name), action="store_const",
                               const=True, default=None, help=help_text)
        else:
            group.add_argument(flag_name(key.name), *key.flag_aliases, dest=flag_dest(key.name), default=None,
                               metavar=key.name.split(".", 1)[1].upper(), help=help_text)


def config_from_args(args: argparse.Namespace, section: str = "agent") -> config_mod.Config:
    """The effective config for a command using ``add_config_arguments``; applies log.* settings."""
    flags = {}
    for key in config_mod.KEYS:
        if key.name.startswith(section + "."):
            flags[key.name] = getattr(args, flag_dest(key.name), None)
    log_format = getattr(args, "log_format", None)
    flags["log.format"] = log_format
    flags["log.level"] = getattr(args, "log_level", None)
    config = config_mod.load(getattr(args, "config", None), flags)
    log.configure(config["log.format"], config["log.level"])
    return config


def node_lock(config: config_mod.Config):
    """The one-agent-per-node lock (``agent.lock_file``), not yet acquired; `agent` and `top --agent` hold it."""
    from dnstrace.pipeline.lock import InstanceLock  # noqa: PLC0415

    return InstanceLock(config["agent.lock_file"])


def health_server(config: config_mod.Config, pipeline):
    """/healthz and /readyz on ``agent.health_addr`` (not started), or None when it is empty."""
    from dnstrace.pipeline.health import HealthServer  # noqa: PLC0415

    return HealthServer(config["agent.health_addr"], pipeline) if config["agent.health_addr"] else None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="run the node agent: every signal, enriched, shipped to the collector (as a service)",
        description="Run the long-lived node agent: trace every configured signal, enrich the events, "
                    "ship them to the collector (spooling on disk while it is away) and serve "
                    "metrics and health. SIGTERM/SIGINT detach every probe and flush the spool. "
                    "One agent per node (agent.lock_file).",
        epilog="examples:\n"
               "  dnstrace agent --print-config\n"
               "  dnstrace agent --collector collector.example:7053 --tls-ca /etc/dnstrace/ca.pem\n"
               "  dnstrace --log-format json agent --config /etc/dnstrace/dnstrace.toml --health-addr :9464\n"
               "  DNSTRACE_AGENT_SIGNALS=lookups,tcp dnstrace agent --duration 10m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective configuration (TOML, with where each value came from) and exit")
    parser.add_argument("--duration", default=None, metavar="DUR",
                        help="stop after this long (default: run until SIGTERM)")
    add_config_arguments(parser, "agent")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnstrace.findings.engine import FindingsEngine  # noqa: PLC0415
    from dnstrace.kernel.load import require_privileges  # noqa: PLC0415
    from dnstrace.pipeline.health import notify_systemd  # noqa: PLC0415
    from dnstrace.pipeline.runner import Pipeline  # noqa: PLC0415

    config = config_from_args(args, "agent")
    if args.print_config:
        print(config_mod.render_toml(config), end="")
        return 0
    duration_s = parse_duration_s(args.duration) if args.duration else None
    logger = log.get("agent")
    findings = FindingsEngine(host=config["agent.host_id"])
    pipeline = Pipeline(config, stages=[findings])  # validates agent.signals before anything is attached
    require_privileges()
    lock = node_lock(config).acquire()
    health = None
    try:
        health = health_server(config, pipeline)
        if health is not None:
            health.start()
        logger.info("agent starting", host_id=config["agent.host_id"], signals=pipeline.signals,
                    config_file=config.path, collector=config["agent.collector"] or "embedded",
                    health=config["agent.health_addr"] or None)

        def on_ready() -> None:
            findings.gai_traced = any(name in pipeline.attached_signals for name in ("gai", "lookups"))
            notify_systemd("READY=1")
            logger.info("agent ready", attached=pipeline.attached_signals,
                        not_started=pipeline.failed_signals or None)

        try:
            pipeline.run(duration_s=duration_s, on_ready=on_ready)
        finally:
            notify_systemd("STOPPING=1")
        for group in ("sources", "sinks"):  # sinks include the findings stage
            for name, counters in pipeline.stats()[group].items():
                if counters:
                    logger.info("final counters", **{group[:-1]: name}, **counters)
        logger.info("agent stopped: every probe detached", **pipeline.stats()["pipeline"])
    finally:
        if health is not None:
            health.close()
        lock.release()
    status("dnstrace: agent stopped")
    return 0
