"""``dnstrace query``: ask a collector (the agent's embedded one by default) about recorded traces."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence

from dnstrace.errors import UsageError
from dnstrace.units import parse_time_ns, split_csv

EXAMPLES = """\
modes (default: list events, most recent --limit, oldest first):
  --top N [--by comm|host|container|name|server|...] [--order p99|count|failures]
  --bucket 1m [--by host]       time series: count, failures, p50/p99 per bucket
  --findings                    which rules fired on which hosts (fleet view)

examples:
  dnstrace query --since 10m --kind gai --min-latency 1s
  dnstrace query --collector coll:7053 --tls-ca ca.pem --since 10m --kind gai --pid 4711 --min-latency 1s --json
  dnstrace query --since 1h --kind dns --failed --top 10 --by server --order failures
  dnstrace query --since 1h --kind lookup --top 20 --by host
  dnstrace query --since 6h --findings
  dnstrace query --since 10m --kind lookup --min-latency 1s    each lookup with its attempts as a tree

--top and --bucket answer whole minutes: --since/--until are widened to the minute, so the
answer comes from the per-minute rollups and counts every event of hosts that ship summaries
(agent.ship = summary), not only the ones they shipped raw.

Without --collector, asks the embedded collector of this node's agent on its local unix
socket (agent.embedded_listen); a unix socket needs no TLS (root-only permissions). TCP
addresses use TLS unless --insecure is given. The query token comes from --token, the
config key query.token or DNSTRACE_QUERY_TOKEN.
"""

EVENT_TABLE = (("ts", "TIME", 12), ("host", "HOST", 14), ("kind", "KIND", 9), ("pid", "PID", 7),
               ("comm", "COMM", 15), ("name", "NAME", 30), ("server", "SERVER", 15), ("latency_ns", "LATENCY", 9),
               ("result", "RESULT", 12))


def register(subparsers) -> None:
    p = subparsers.add_parser("query", help="ask the recorded traces (embedded collector or a central one)",
                              description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config file")
    p.add_argument("--collector", help="HOST:PORT or unix:PATH (default: the local agent's embedded collector)")
    p.add_argument("--insecure", action="store_true", default=None, help="plaintext over TCP (explicit opt-in)")
    p.add_argument("--tls-ca", help="CA that signed the collector's certificate (config agent.tls_ca)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS (config agent.tls_cert)")
    p.add_argument("--tls-key", help="client key for mutual TLS (config agent.tls_key)")
    p.add_argument("--token", help="query bearer token (config query.token, env DNSTRACE_QUERY_TOKEN)")
    f = p.add_argument_group("filters (repeat a flag or separate values with commas)")
    f.add_argument("--since", help="start: 10m (ago), ISO time or @UNIX (default 1h)")
    f.add_argument("--until", help="end: same forms (default now)")
    f.add_argument("--host", action="append", help="host id")
    f.add_argument("--pid", action="append", help="process id")
    f.add_argument("--comm", action="append", help="process name")
    f.add_argument("--container", action="append")
    f.add_argument("--pod", action="append")
    f.add_argument("--namespace", action="append", help="Kubernetes namespace")
    f.add_argument("--kind", action="append", help="event kind: gai, dns, lookup, connect, syn_retry, drop, ...")
    f.add_argument("--name", help="queried name glob, e.g. '*.svc.cluster.local'")
    f.add_argument("--server", action="append", help="nameserver address")
    f.add_argument("--min-latency", help="only events at least this slow, e.g. 1s")
    f.add_argument("--failed", action="store_true", help="only failures: errors, non-NOERROR rcodes, timeouts")
    f.add_argument("--rcode", action="append", help="DNS rcode, e.g. SERVFAIL")
    f.add_argument("--error", action="append", help="error name, e.g. EAI_AGAIN")
    f.add_argument("--reason", action="append", help="drop reason, e.g. IP_RPFILTER")
    f.add_argument("--rule", action="append", help="finding rule id")
    m = p.add_argument_group("what to compute")
    m.add_argument("--top", type=int, metavar="N", help="top N groups (see --by, --order)")
    m.add_argument("--by", help="group key for --top/--bucket: host, comm, container, pod, name, server, kind, ...")
    m.add_argument("--order", choices=("p99", "count", "failures", "max"), help="--top ordering (default p99)")
    m.add_argument("--bucket", help="time series with this bucket width, e.g. 1m")
    m.add_argument("--findings", action="store_true", help="findings across the fleet: rule, hosts, first/last seen")
    m.add_argument("--limit", type=int, help="most rows returned (events default 1000)")
    o = p.add_mutually_exclusive_group()
    o.add_argument("--json", action="store_true", help="one JSON object per line (event rows keep agent field names)")
    o.add_argument("--csv", action="store_true", help="CSV with a header line")
    p.set_defaults(func=run)


def build_spec(args, now_ns: int | None = None):
    from dnstrace.units import parse_duration_ns
    from dnstrace.wire.query import QuerySpec

    now_ns = now_ns or time.time_ns()
    spec = QuerySpec()
    chosen = [m for m, on in (("top", args.top is not None), ("timeseries", bool(args.bucket)),
                              ("findings", args.findings)) if on]
    if len(chosen) > 1:
        raise UsageError(f"choose one of --top, --bucket, --findings (got {', '.join(chosen)})")
    spec.mode = chosen[0] if chosen else "events"
    spec.since_ns = parse_time_ns(args.since or "1h", now_ns)
    spec.until_ns = parse_time_ns(args.until, now_ns) if args.until else 0
    if spec.until_ns and spec.until_ns <= spec.since_ns:
        raise UsageError("--until is not after --since")
    spec.hosts = split_csv(args.host)
    try:
        spec.pids = [int(p) for p in split_csv(args.pid)]
    except ValueError:
        raise UsageError(f"--pid takes numbers: {args.pid}") from None
    spec.comms, spec.containers, spec.pods = split_csv(args.comm), split_csv(args.container), split_csv(args.pod)
    spec.namespaces, spec.kinds, spec.servers = split_csv(args.namespace), split_csv(args.kind), split_csv(args.server)
    spec.rcodes, spec.errors = [r.upper() for r in split_csv(args.rcode)], split_csv(args.error)
    spec.reasons, spec.rules = split_csv(args.reason), split_csv(args.rule)
    spec.name_glob = args.name or ""
    spec.min_latency_ns = parse_duration_ns(args.min_latency) if args.min_latency else 0
    spec.failed_only = bool(args.failed)
    if args.top is not None and args.top <= 0:
        raise UsageError("--top takes a positive number")
    spec.limit = args.top if args.top is not None else (args.limit or 0)
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit takes a positive number")
    spec.group_by = args.by or ""
    spec.order_by = args.order or ""
    spec.bucket_ns = parse_duration_ns(args.bucket) if args.bucket else 0
    if args.bucket and spec.bucket_ns <= 0:
        raise UsageError("--bucket must be positive")
    if spec.mode in ("top", "timeseries"):
        from dnstrace.wire.rollup import MINUTE_NS

        spec.since_ns = spec.since_ns // MINUTE_NS * MINUTE_NS
        if spec.until_ns:
            spec.until_ns = -(-spec.until_ns // MINUTE_NS) * MINUTE_NS
    spec.validate()
    return spec


def _event_result(row: dict) -> str:
    for key in ("error", "rcode", "result", "reason", "rule"):
        if row.get(key):
            return str(row[key])
    return "-"


def _cell(key: str, value) -> str:
    from dnstrace.columns import fmt_latency, fmt_time

    if value is None:
        return "-"
    if key in ("ts", "first_ts", "last_ts", "bucket_ts"):
        return fmt_time(value)
    if key.endswith("_ns"):
        return fmt_latency(value)
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def print_rows(spec, columns: list[str], rows: list[dict], as_json: bool, as_csv: bool, out=None) -> None:
    from dnstrace.cli.output import to_json

    out = out or sys.stdout
    if as_json:
        for row in rows:
            out.write(to_json(row) + "\n")
        return
    if spec.mode == "events":
        table = [(k, h, w) for k, h, w in EVENT_TABLE]
        shaped = [dict(r, name=r.get("qname") or r.get("name") or r.get("daddr") or r.get("rule"),
                       result=_event_result(r)) for r in rows]
    else:
        table = [(c, c.upper(), max(8, len(c) + 1)) for c in columns]
        shaped = rows
    if as_csv:
        writer = csv.writer(out)
        keys = [k for k, _, _ in table] if spec.mode != "events" else sorted({k for r in rows for k in r},
                                                                             key=_field_order)
        writer.writerow(keys)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
        return
    if not rows:
        print("dnstrace: no matching rows", file=sys.stderr)
        return
    widths = {k: max(w, *(len(_cell(k, r.get(k))) + 1 for r in shaped)) if k not in ("name",) else w
              for k, _, w in table}
    out.write(" ".join(h.ljust(widths[k]) for k, h, _ in table).rstrip() + "\n")
    for row in shaped:
        out.write(" ".join(_cell(k, row.get(k))[: widths[k]].ljust(widths[k]) for k, _, _ in table).rstrip() + "\n")


def _field_order(key: str):
    from dnstrace.wire.query import EVENT_SELECT

    return (EVENT_SELECT.index(key), key) if key in EVENT_SELECT else (len(EVENT_SELECT), key)


def run(args) -> int:
    from dnstrace import config as config_mod
    from dnstrace.wire.client import query_client

    cfg = config_mod.load(args.config, {"agent.insecure": args.insecure, "agent.tls_ca": args.tls_ca,
                                        "agent.tls_cert": args.tls_cert, "agent.tls_key": args.tls_key,
                                        "query.token": args.token})
    spec = build_spec(args)
    client = query_client(cfg, args.collector or cfg["agent.embedded_listen"])
    trees = spec.mode == "events" and spec.kinds == ["lookup"] and not (args.json or args.csv)
    try:
        columns, rows = client.query(spec)
        note = completeness_note(spec, client)
        related = _tcp_events(client, spec, rows) if trees and rows else []  # for the trees' TCP attempts
    finally:
        client.close()
    if trees:
        print_lookup_trees(rows, related)
    else:
        print_rows(spec, columns, rows, args.json, args.csv)
    if note:
        print(f"dnstrace: {note}", file=sys.stderr)
    return 0


def completeness_note(spec, client, now_ns: int | None = None) -> str:
    """Say when the answer may miss events because hosts have not delivered up to the asked range's end."""
    from dnstrace.columns import fmt_latency

    try:
        stats = client.health()["stats"].get("store", {})
    except Exception:
        return ""  # an older collector, or health refused: nothing to say
    now_ns = now_ns or time.time_ns()
    end = spec.until_ns or now_ns
    behind = [h for h in stats.get("hosts_behind", []) if h["newest_ts"] < end and h["newest_ts"] >= spec.since_ns
              and (not spec.hosts or h["host"] in spec.hosts)]
    if not behind:
        return ""
    catching_up = [h for h in behind if h["catching_up"]]
    shown = ", ".join(f"{h['host']} (newest event {fmt_latency(now_ns - h['newest_ts'])} ago"
                      + (", catching up" if h["catching_up"] else ", silent") + ")" for h in behind[:5])
    more = f" and {len(behind) - 5} more" if len(behind) > 5 else ""
    why = ("their agents are replaying spooled batches" if catching_up else
           "they have delivered nothing recent (down, unreachable or idle; agents spool meanwhile)")
    return (f"answer may be incomplete: {len(behind)} host{'s' if len(behind) > 1 else ''} behind: "
            f"{shown}{more}; {why}")


def _tcp_events(client, spec, lookups: list[dict]) -> list[dict]:
    """The connects and SYN retransmits of the lookups' processes (their TCP attempts' connections)."""
    from dnstrace.wire.query import QuerySpec

    if not any(a.get("proto") == "tcp" for lk in lookups for a in lk.get("attempts") or [] if isinstance(a, dict)):
        return []
    related = QuerySpec(mode="events", kinds=["connect", "syn_retry"], hosts=spec.hosts,
                        pids=sorted({lk["pid"] for lk in lookups if lk.get("pid")}),
                        since_ns=min(lk["ts"] for lk in lookups),
                        until_ns=max(lk["ts"] + (lk.get("latency_ns") or 0) for lk in lookups) + 1, limit=100_000)
    return client.query(related)[1]


def print_lookup_trees(lookups: list[dict], related: Sequence[dict] = (), out=None) -> None:
    """Each lookup: when, where, who, then its attempts as an indented tree (``dnstrace.waterfall``)."""
    from dnstrace.columns import fmt_time
    from dnstrace.waterfall import waterfall_lines

    out = out or sys.stdout
    if not lookups:
        print("dnstrace: no matching rows", file=sys.stderr)
        return
    for lookup in lookups:
        mine = [e for e in related if e.get("host") == lookup.get("host") and e.get("pid") == lookup.get("pid")]
        who = f"pid {lookup.get('pid')} ({lookup.get('comm')})" + (
            f" container {lookup['container']}" if lookup.get("container") else "")
        out.write(f"{fmt_time(lookup.get('ts'))} {lookup.get('host')} {who}\n")
        for line in waterfall_lines(lookup, mine):
            out.write("  " + line + "\n")
