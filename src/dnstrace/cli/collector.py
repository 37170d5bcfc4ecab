"""``dnstrace collector``: run the central collector (gRPC ingest + queries) over DuckDB or ClickHouse."""

from __future__ import annotations

import argparse

from dnstrace.log import status

EXAMPLES = """\
examples:
  dnstrace collector --listen 0.0.0.0:7053 --store duckdb:/var/lib/dnstrace/collector.duckdb \\
      --tls-cert srv.pem --tls-key srv.key --tls-client-ca agents-ca.pem
  dnstrace collector --listen 127.0.0.1:7053 --store clickhouse://127.0.0.1:9000/dnstrace --insecure

TCP is TLS unless --insecure is given; a unix:PATH socket is local and may run without TLS.
Tokens: agents present the ingest token, `dnstrace query` the query token (separate on purpose).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("collector", help="run the collector: agents stream to it, `dnstrace query` asks it",
                              description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config file (default /etc/dnstrace/dnstrace.toml if present)")
    p.add_argument("--listen", help="HOST:PORT or unix:PATH (config collector.listen, default 127.0.0.1:7053)")
    p.add_argument("--store", help="duckdb:PATH or clickhouse://HOST:PORT/DB (config collector.store)")
    p.add_argument("--retention", help="delete events older than this, e.g. 7d (config collector.retention)")
    p.add_argument("--insecure", action="store_true", default=None, help="serve plaintext on TCP (explicit opt-in)")
    p.add_argument("--tls-cert", help="server certificate (PEM)")
    p.add_argument("--tls-key", help="server key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--ingest-token", help="bearer token agents must present (better: DNSTRACE_COLLECTOR_INGEST_TOKEN)")
    p.add_argument("--query-token", help="bearer token queries must present (better: DNSTRACE_COLLECTOR_QUERY_TOKEN)")
    p.add_argument("--web-listen", help="HOST:PORT for the read-only web view (config collector.web_listen; off by default)")
    p.add_argument("--max-batch-bytes", help="refuse larger batches, e.g. 64MiB")
    p.add_argument("--metrics-addr", "--metrics", dest="metrics_addr",
                   help="HOST:PORT for Prometheus /metrics: streams, batches, refusals, queries running/refused/"
                        "cancelled, the ingest queue and hosts behind (config collector.metrics_addr; default off)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dnstrace import config as config_mod
    from dnstrace.collector.server import from_config as server_from_config
    from dnstrace.collector.store.from_url import open_store
    from dnstrace.collector.web import start_web
    from dnstrace.stop import StopFlag, install_signal_handlers

    cfg = config_mod.load(args.config, {
        "collector.listen": args.listen, "collector.store": args.store, "collector.retention": args.retention,
        "collector.insecure": args.insecure, "collector.tls_cert": args.tls_cert, "collector.tls_key": args.tls_key,
        "collector.tls_client_ca": args.tls_client_ca, "collector.ingest_token": args.ingest_token,
        "collector.query_token": args.query_token, "collector.max_batch_bytes": args.max_batch_bytes,
        "collector.metrics_addr": args.metrics_addr,
        "collector.web_listen": args.web_listen,
    })
    store = open_store(cfg["collector.store"], cfg["collector.retention"])
    try:
        server = server_from_config(store, cfg, cfg["collector.listen"])
        web = start_web(cfg, store, cfg["collector.web_listen"])
        server.start()
        metrics_http = None
        if cfg["collector.metrics_addr"]:
            from dnstrace.collector import metrics

            metrics_http = metrics.serve(server, cfg["collector.metrics_addr"])
        stop = StopFlag()
        install_signal_handlers(stop)
        tls = "plaintext" if server._credentials is None else "tls"
        status(f"dnstrace: collector listening on {server.address} ({tls}), store {store.describe()}"
               + (f", web view on {web.url}" if web else ""))
        while not stop.wait(1.0):
            pass
        if metrics_http is not None:
            metrics_http.shutdown()
        if web:
            web.stop()
        server.stop()
        return 0
    finally:
        store.close()
