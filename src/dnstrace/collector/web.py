"""The collector's read-only web view: fleet findings, latency heatmaps, lookup waterfalls, nameserver health.

``WebView(store, listen, ...)`` serves HTML pages on HOST:PORT, each answered from the same
query engine ``dnstrace query`` uses (``QuerySpec`` -> ``store.query``), filtered by URL
parameters named like ``dnstrace query``'s flags (since, until, host, pid, comm, container,
pod, name), so a page's URL can be pasted into an incident channel. Nothing is written.

Security is the gRPC API's: TLS unless ``insecure`` (with the collector's certificate and,
for mutual TLS, its client CA), and when a query token is set every page and asset but
``/login`` needs it, as ``Authorization: Bearer TOKEN`` or the cookie ``/login`` sets.
Charts are drawn in the browser by ``web_static/app.js`` (uPlot, bundled at build time by
``scripts/build-web``; the browser fetches nothing from anywhere else).
"""

from __future__ import annotations

import hmac
import html
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnstrace import log
from dnstrace.errors import DnstraceError, UsageError
from dnstrace.latency import Histogram
from dnstrace.units import format_duration_ns as dur
from dnstrace.wire.query import QuerySpec

if TYPE_CHECKING:
    from dnstrace.collector.store.base import Store
    from dnstrace.config import Config

STATIC = Path(__file__).resolve().parent / "web_static"
PAGES = (("fleet", "Fleet"), ("latency", "Latency"), ("lookups", "Slow lookups"), ("servers", "Nameservers"))
FILTERS = ("since", "until", "host", "pid", "comm", "container", "pod", "name")
COOKIE = "dnstrace_token"
HEATMAP_EVENTS = 50_000  # most recent events a heatmap is drawn from (said on the page when reached)
HEATMAP_GROUPS = 6
LOOKUP_LIST = 200
MAX_HOSTS, MAX_SERVERS = 20, 16
GROUPS = {"host": "hosts", "comm": "comms", "container": "containers", "pod": "pods", "server": "servers"}


def spec_from_params(params: dict[str, str], now_ns: int, **fields: Any) -> QuerySpec:
    """The QuerySpec ``dnstrace query`` would build from the same filters."""
    from dnstrace.units import parse_time_ns, split_csv

    spec = QuerySpec(**fields)
    spec.since_ns = parse_time_ns(params.get("since") or "1h", now_ns)
    spec.until_ns = parse_time_ns(params["until"], now_ns) if params.get("until") else 0
    if spec.until_ns and spec.until_ns <= spec.since_ns:
        raise UsageError("until is not after since")
    spec.hosts = spec.hosts or split_csv([params.get("host", "")])
    try:
        spec.pids = spec.pids or [int(p) for p in split_csv([params.get("pid", "")])]
    except ValueError:
        raise UsageError(f"pid takes numbers: {params.get('pid')!r}") from None
    spec.comms = split_csv([params.get("comm", "")])
    spec.containers = split_csv([params.get("container", "")])
    spec.pods = split_csv([params.get("pod", "")])
    spec.name_glob = params.get("name", "")
    spec.validate()
    return spec


def pick_bucket_ns(since_ns: int, until_ns: int) -> int:
    span = max(1, until_ns - since_ns)
    for seconds in (1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400):
        if span / (seconds * 1e9) <= 120:
            return seconds * 1_000_000_000
    return 86400 * 1_000_000_000


def _esc(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _time(ns: int | None) -> str:
    from dnstrace.columns import fmt_time

    return fmt_time(ns) if ns else "-"


class WebView:
    def __init__(self, store: Store[Any], listen: str, *, insecure: bool = False, tls_cert: str = "", tls_key: str = "",
                 tls_client_ca: str = "", query_token: str = "") -> None:
        self.store = store
        self.listen = listen
        self.token = query_token
        self.log = log.get("web")
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError(f"web view: expected HOST:PORT, got {listen!r}")
        self._context = self._tls(listen, insecure, tls_cert, tls_key, tls_client_ca)
        self._bind = (host.strip("[]") or "0.0.0.0", int(port))
        self._httpd: ThreadingHTTPServer | None = None

    @staticmethod
    def _tls(listen: str, insecure: bool, cert: str, key: str, client_ca: str) -> ssl.SSLContext | None:
        if cert or key:
            if not (cert and key):
                raise UsageError("web view: TLS needs both a certificate and a key")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(cert, key)
                if client_ca:
                    context.load_verify_locations(client_ca)
                    context.verify_mode = ssl.CERT_REQUIRED
            except (OSError, ssl.SSLError) as err:
                raise UsageError(f"web view: cannot load TLS files: {err}") from None
            return context
        if client_ca:
            raise UsageError("web view: a client CA (mutual TLS) needs a server certificate too")
        if insecure:
            return None
        raise UsageError(f"refusing to serve the web view in plaintext on {listen}",
                         hint="give the collector's --tls-cert/--tls-key, or --insecure to accept plaintext")

    @property
    def scheme(self) -> str:
        return "http" if self._context is None else "https"

    @property
    def port(self) -> int | None:
        return self._httpd.server_address[1] if self._httpd else None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self._bind[0]}:{self.port}"

    def start(self) -> WebView:
        view = self

        class Handler(_Handler):
            web = view

        try:
            self._httpd = _Server(self._bind, Handler)
        except OSError as err:
            raise DnstraceError(f"web view: cannot listen on {self.listen}: {err.strerror}") from None
        self._httpd.daemon_threads = True
        if self._context is not None:
            self._httpd.socket = self._context.wrap_socket(self._httpd.socket, server_side=True,
                                                           do_handshake_on_connect=False)
        threading.Thread(target=self._httpd.serve_forever, name="web", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # --- pages: (title, html body, chart data or None) ---------------------------------
    def page_fleet(self, params: dict[str, str], now_ns: int) -> tuple[str, str, dict[str, Any] | None]:
        spec = spec_from_params(params, now_ns, mode="findings")
        _, findings = self.store.query(spec)
        bucket = pick_bucket_ns(spec.since_ns, spec.until_ns or now_ns)
        series_spec = spec_from_params(params, now_ns, mode="timeseries", kinds=["finding"], group_by="rule",
                                       bucket_ns=bucket)
        _, points = self.store.query(series_spec)
        hosts_spec = spec_from_params(params, now_ns, mode="top", kinds=["lookup"], group_by="host",
                                      order_by="count", limit=MAX_HOSTS * 5)
        _, hosts = self.store.query(hosts_spec)
        rows = "".join(
            f"<tr class='finding'><td class='{'crit' if f['severity'] == 'critical' else 'warn'}'>{_esc(f['severity'])}"
            f"</td><td>{_esc(f['rule'])}</td><td>{_esc(', '.join(f['host_list']))}</td><td>{_time(f['first_ts'])}</td>"
            f"<td>{_time(f['last_ts'])}</td><td>{f['count']}</td><td>{_esc(f.get('summary'))}</td></tr>"
            for f in findings)
        body = ("<h2>Findings</h2><table id='findings'><tr><th>severity</th><th>rule</th><th>hosts</th>"
                "<th>since</th><th>last seen</th><th>reports</th><th>summary (one sample)</th></tr>"
                + (rows or "<tr><td colspan=7>no findings in this range</td></tr>") + "</table>")
        body += ("<h2>Hosts</h2><table id='hosts'><tr><th>host</th><th>lookups</th><th>failed</th><th>p50</th>"
                 "<th>p99</th></tr>" + "".join(
                     f"<tr><td><a href='{self.link('latency', params, host=h['host'])}'>{_esc(h['host'])}</a></td>"
                     f"<td>{h['count']}</td><td>{h['failures']}</td><td>{dur(h['p50_ns'])}</td>"
                     f"<td>{dur(h['p99_ns'])}</td></tr>" for h in hosts) + "</table>")
        times = sorted({p["bucket_ts"] for p in points})
        rules = sorted({p["rule"] for p in points if p.get("rule")})
        counts = {(p["bucket_ts"], p.get("rule")): p["count"] for p in points}
        chart = {"lines": [{"title": "findings reported per " + dur(bucket), "t": times,
                            "series": [{"label": r, "values": [counts.get((t, r), 0) for t in times]}
                                       for r in rules]}]} if times else None
        return "Fleet", body, chart

    def page_latency(self, params: dict[str, str], now_ns: int) -> tuple[str, str, dict[str, Any] | None]:
        by = params.get("by") or "host"
        if by not in GROUPS:
            raise UsageError(f"cannot split by {by!r}", hint="host, comm, container, pod or server")
        kind = "dns" if by == "server" else (params.get("kind") or "lookup")
        if kind not in ("lookup", "gai", "dns"):
            raise UsageError(f"kind {kind!r}: lookup, gai or dns")
        spec = spec_from_params(params, now_ns, mode="events", kinds=[kind], limit=HEATMAP_EVENTS)
        _, events = self.store.query(spec)
        end = spec.until_ns or now_ns
        bucket = pick_bucket_ns(spec.since_ns, end)
        groups: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if e.get("latency_ns"):
                groups.setdefault(str(e.get(by) or "(none)"), []).append(e)
        top = sorted(groups.items(), key=lambda item: -len(item[1]))[:HEATMAP_GROUPS]
        panels = []
        all_lat = [e["latency_ns"] for _, es in top for e in es]
        ymin, ymax = (min(all_lat) / 2 / 1e9, max(all_lat) * 2 / 1e9) if all_lat else (1e-4, 10)
        for name, es in top:
            per_t: dict[int, Histogram] = {}
            for e in es:
                per_t.setdefault((e["ts"] // bucket) * bucket, Histogram()).add(e["latency_ns"])
            times = sorted(per_t)
            figures = [per_t[t].quantiles((0.5, 0.99)) for t in times]
            panels.append({"label": f"{by} {name}: {len(es)} {kind} events", "t": times, "ymin": ymin, "ymax": ymax,
                           "cells": [[t, b, n] for t in times for b, n in sorted(per_t[t].buckets.items())],
                           "p50": [p50 for p50, _ in figures], "p99": [p99 for _, p99 in figures]})
        note = (f"<p>drawn from the most recent {HEATMAP_EVENTS} events of the range</p>"
                if len(events) >= HEATMAP_EVENTS else "")
        body = (f"<h2>Latency of {html.escape(kind)} per {html.escape(by)}, buckets of {dur(bucket)} "
                f"(colour: events per latency bucket; black p50, red p99)</h2>{note}"
                + ("" if panels else "<p id='nodata'>no events with a latency in this range</p>"))
        return "Latency", body, {"heatmaps": panels, "bucket_s": bucket / 1e9, "xmin": spec.since_ns / 1e9,
                                 "xmax": end / 1e9}

    def page_lookups(self, params: dict[str, str], now_ns: int) -> tuple[str, str, dict[str, Any] | None]:
        from dnstrace.units import parse_duration_ns

        min_latency = parse_duration_ns(params.get("min_latency") or "100ms")
        spec = spec_from_params(params, now_ns, mode="events", kinds=["lookup"], min_latency_ns=min_latency,
                                limit=LOOKUP_LIST)
        _, lookups = self.store.query(spec)
        rows = "".join(
            f"<tr class='lookup'><td>{_time(lk['ts'])}</td><td>{_esc(lk.get('host'))}</td><td>{_esc(lk.get('pid'))}"
            f"</td><td>{_esc(lk.get('comm'))}</td><td>{_esc(lk.get('container'))}</td>"
            f"<td><a class='waterfall-link' "
            f"href='{self.link('lookup', {}, host=lk.get('host'), pid=lk.get('pid'), ts=lk['ts'])}'>"
            f"{_esc(lk.get('name'))}</a></td><td>{dur(lk.get('latency_ns'))}</td><td>{_esc(lk.get('error') or 'ok')}</td>"
            f"<td>{len(lk.get('attempts') or [])}</td><td>{_esc(lk.get('timeouts'))}</td></tr>"
            for lk in reversed(lookups))
        body = (f"<h2>Lookups slower than {dur(min_latency)} (most recent {LOOKUP_LIST}; a name opens its "
                "waterfall)</h2><table id='lookups'><tr><th>time</th><th>host</th><th>pid</th><th>comm</th>"
                "<th>container</th><th>name</th><th>latency</th><th>result</th><th>attempts</th><th>timeouts</th>"
                "</tr>" + (rows or "<tr><td colspan=10>no lookup this slow in this range</td></tr>") + "</table>")
        return "Slow lookups", body, None

    def page_lookup(self, params: dict[str, str], now_ns: int) -> tuple[str, str, dict[str, Any] | None]:
        from dnstrace.waterfall import attempt_wait_ns

        try:
            ts, pid = int(params.get("ts", "")), int(params.get("pid", ""))
        except ValueError:
            raise UsageError("a lookup is named by host, pid and ts (unix ns)") from None
        hosts = [params["host"]] if params.get("host") else []
        spec = QuerySpec(mode="events", kinds=["lookup"], hosts=hosts, pids=[pid], since_ns=ts, until_ns=ts + 1,
                         limit=1)
        _, found = self.store.query(spec)
        if not found:
            return "Lookup", "<p id='nodata'>no such lookup (retention may have removed it)</p>", None
        lk = found[0]
        end = ts + (lk.get("latency_ns") or 0)
        related_spec = QuerySpec(mode="events", kinds=["connect", "syn_retry"], hosts=hosts, pids=[pid],
                                 since_ns=ts, until_ns=end + 1, limit=10_000)
        _, related = self.store.query(related_spec)
        attempts = [a for a in lk.get("attempts") or [] if isinstance(a, dict)]
        total = max([lk.get("latency_ns") or 1] + [(a["ts"] - ts) + attempt_wait_ns(a, lk) for a in attempts
                                                    if a.get("ts")])

        def pct(ns: float) -> str:
            return f"{max(0.0, min(100.0, 100.0 * ns / total)):.2f}%"

        rows = []
        for a in attempts:
            offset, wait = (a.get("ts") or ts) - ts, attempt_wait_ns(a, lk)
            unanswered = a.get("answered") is False
            cls = "timeout" if unanswered else ("tcp" if a.get("proto") == "tcp" else "answer")
            if unanswered:
                outcome = f"no answer: timeout after {dur(wait)}"
            else:
                outcome = f"{_esc(a.get('rcode'))} after {dur(a.get('latency_ns'))}"
                if a.get("tc"):
                    outcome += ", truncated (TC)"
                if a.get("answers"):
                    outcome += ", answer " + _esc(", ".join(map(str, a["answers"][:4])))
            if a.get("tcp_fallback"):
                outcome += " (TCP retry after TC)"
            marks = ""
            conn = [e for e in related if e.get("sport") == a.get("sport") and e.get("daddr") == a.get("server")
                    and a.get("proto") == "tcp"]
            for e in conn:
                if e.get("kind") == "syn_retry":
                    marks += f"<span class='syn' style='left:{pct(e['ts'] - ts)}' title='SYN retransmit'></span>"
            rows.append(
                f"<tr class='attempt {cls}'><td>+{dur(offset)}</td><td>{_esc(a.get('qtype'))}</td>"
                f"<td>{_esc(a.get('proto') or 'udp')}</td>"
                f"<td class='server'>{_esc(a.get('server'))}:{_esc(a.get('dport') or 53)}</td>"
                f"<td><div class='wf'><span class='{cls}' style='left:{pct(offset)};width:{pct(wait)}'></span>"
                f"{marks}</div></td><td class='outcome'>{outcome}</td></tr>")
            for e in sorted(conn, key=lambda e: e.get("ts") or 0):
                what = (f"SYN retransmit #{_esc(e.get('retry'))}" if e.get("kind") == "syn_retry" else
                        f"TCP connect {_esc(e.get('result'))} after {dur(e.get('latency_ns'))}, "
                        f"{_esc(e.get('retries') or 0)} SYN retransmits")
                rows.append(f"<tr class='tcp-event'><td>+{dur((e.get('ts') or ts) - ts)}</td><td></td><td>tcp</td>"
                            f"<td>{_esc(e.get('daddr'))}:{_esc(e.get('dport'))}</td><td></td><td>{what}</td></tr>")
        conf = lk.get("resolv_conf") or {}
        body = (f"<h2 id='lookup-title'>{_esc(lk.get('name'))}: {dur(lk.get('latency_ns'))}, "
                f"{_esc(lk.get('error') or 'ok')}</h2><p>{_time(ts)} · host {_esc(lk.get('host'))} · pid "
                f"{_esc(pid)} ({_esc(lk.get('comm'))})" + (f" · container {_esc(lk['container'])}" if lk.get("container")
                                                         else "")
                + f" · {_esc(lk.get('source'))} lookup{(' via ' + _esc(lk['func'])) if lk.get('func') else ''}</p>"
                f"<p>resolv.conf: nameservers {_esc(', '.join(conf.get('nameservers') or []))}; timeout "
                f"{_esc(conf.get('timeout'))} s, attempts {_esc(conf.get('attempts'))}</p>"
                "<table id='waterfall'><tr><th>start</th><th>type</th><th>proto</th><th>server</th>"
                f"<th>0 … {dur(total)}</th><th>outcome</th></tr>" + "".join(rows) + "</table>"
                + ("" if attempts else "<p>no wire queries seen (cache, /etc/hosts or a local socket)</p>"))
        return "Lookup", body, None

    def page_servers(self, params: dict[str, str], now_ns: int) -> tuple[str, str, dict[str, Any] | None]:
        hosts_spec = spec_from_params(params, now_ns, mode="top", kinds=["dns"], group_by="host", order_by="count",
                                      limit=MAX_HOSTS)
        _, hosts = self.store.query(hosts_spec)
        rows = []
        for h in hosts:
            base = dict(params, host=h["host"])
            _, servers = self.store.query(spec_from_params(base, now_ns, mode="top", kinds=["dns"],
                                                           group_by="server", order_by="count", limit=MAX_SERVERS))
            for s in servers:
                _, rcodes = self.store.query(spec_from_params(base, now_ns, mode="top", kinds=["dns"],
                                                              servers=[s["server"]], group_by="rcode",
                                                              order_by="count", limit=32))
                unanswered = sum(r["count"] for r in rcodes if r.get("rcode") is None)
                answers = ", ".join(f"{r['rcode']} {r['count']}" for r in rcodes if r.get("rcode"))
                rows.append(f"<tr class='server'><td>{_esc(h['host'])}</td><td>{_esc(s['server'])}</td>"
                            f"<td>{s['count']}</td><td class='answered'>{s['count'] - unanswered}</td>"
                            f"<td class='unanswered'>{unanswered}</td><td>{_esc(answers)}</td>"
                            f"<td>{dur(s['p50_ns'])}</td><td>{dur(s['p99_ns'])}</td></tr>")
        body = ("<h2>Nameserver health per host</h2><table id='servers'><tr><th>host</th><th>server</th>"
                "<th>queries</th><th>answered</th><th>unanswered</th><th>answers by rcode</th><th>p50</th>"
                "<th>p99</th></tr>" + ("".join(rows) or "<tr><td colspan=8>no DNS queries in this range</td></tr>")
                + "</table>")
        return "Nameservers", body, None

    # --- rendering -------------------------------------------------------------------
    @staticmethod
    def link(page: str, params: dict[str, str], **extra: object) -> str:
        merged = {k: v for k, v in {**params, **{k: str(v) for k, v in extra.items() if v is not None}}.items() if v}
        return html.escape(f"/{page}" + (("?" + urllib.parse.urlencode(merged)) if merged else ""), quote=True)

    def render(self, page: str, params: dict[str, str], title: str, body: str, chart: dict[str, Any] | None) -> str:
        keep = {k: params[k] for k in FILTERS if params.get(k)}
        nav = "".join(f"<a href='{self.link(name, keep)}'{' class=here' if name == page else ''}>{label}</a>"
                      for name, label in PAGES)
        fields = "".join(f"<input name='{f}' placeholder='{f}' value='{_esc(params.get(f, ''))}'>"
                         for f in FILTERS)
        if page == "latency":
            by = params.get("by") or "host"
            fields += "<select name='by'>" + "".join(
                f"<option{' selected' if g == by else ''}>{g}</option>" for g in GROUPS) + "</select>"
        if page == "lookups":
            fields += f"<input name='min_latency' placeholder='min latency' value='{_esc(params.get('min_latency', ''))}'>"
        form = f"<form class='filters' method='get' action='/{page}'>{fields}<button type='submit'>apply</button></form>"
        data = ("<script id='data' type='application/json'>" + json.dumps(chart).replace("</", "<\\/")
                + "</script>") if chart else ""
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>dnstrace · {html.escape(title)}</title>"
                "<link rel='stylesheet' href='/static/app.css'></head><body>"
                f"<nav>{nav}</nav><main>{form if page != 'lookup' else ''}{body}<div id='charts'></div></main>"
                f"{data}<script src='/static/app.js'></script></body></html>")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that breaks off (or speaks plaintext to TLS) costs a debug line, not a traceback."""
        import sys

        log.get("web").debug("request failed", client=client_address[0], error=str(sys.exc_info()[1]))


LOGIN_FORM = ("<!doctype html><html><head><meta charset='utf-8'><title>dnstrace · token</title></head><body>"
              "<form method='post' action='/login'><p>{message}</p><input type='hidden' name='next' value='{next}'>"
              "<input type='password' name='token' placeholder='query token' autofocus> "
              "<button type='submit'>open</button></form></body></html>")


class _Handler(BaseHTTPRequestHandler):
    web: WebView
    server_version = "dnstrace-web"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # structured, quiet: one debug line per request
        self.web.log.debug("request", line=fmt % args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                         "form-action 'self'; frame-ancestors 'none'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        wanted = self.web.token
        if not wanted:
            return True
        presented = None
        auth_header = self.headers.get("Authorization", "")
        if auth_header.startswith("Bearer "):
            presented = auth_header[len("Bearer "):]
        else:
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    presented = urllib.parse.unquote(value)
        return presented is not None and hmac.compare_digest(presented.encode(), wanted.encode())

    def _login_form(self, status: int, message: str, next_path: str) -> None:
        page = LOGIN_FORM.format(message=html.escape(message), next=html.escape(next_path, quote=True))
        self._send(status, page.encode(), "text/html; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if not self._authorized():
            self._login_form(401, "This collector needs its query token.", self.path)
            return
        if url.path.startswith("/static/"):
            name = url.path[len("/static/"):]
            types = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
            if name not in types:
                self._send(404, b"not found\n", "text/plain")
                return
            self._send(200, (STATIC / name).read_bytes(), types[name])
            return
        page = url.path.strip("/") or "fleet"
        if page not in dict(PAGES) and page != "lookup":
            self._send(404, b"not found\n", "text/plain")
            return
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        started = time.perf_counter()
        try:
            title, body, chart = getattr(self.web, f"page_{page}")(params, time.time_ns())
            status = 200
        except UsageError as err:
            title, body, chart, status = "Error", (f"<p class='error'>{_esc(err.message)}"
                                                   + (f" ({_esc(err.hint)})" if err.hint else "") + "</p>"), None, 400
        except Exception as err:  # a store failure: say so on the page, keep serving
            self.web.log.error("web query failed", page=page, error=str(err))
            title, body, chart, status = "Error", f"<p class='error'>query failed: {_esc(type(err).__name__)}</p>", None, 500
        text = self.web.render(page, params, title, body, chart)
        text = text.replace("</main>", f"<p><small>answered in {(time.perf_counter() - started) * 1e3:.0f} ms"
                                       "</small></p></main>")
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/login":
            self._send(405, b"read-only\n", "text/plain", {"Allow": "GET, HEAD"})
            return
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
        next_path = form.get("next") or "/"
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"
        token = form.get("token", "")
        if not self.web.token or not hmac.compare_digest(token.encode(), self.web.token.encode()):
            self._login_form(401, "Wrong token.", next_path)
            return
        secure = "; Secure" if self.web.scheme == "https" else ""
        cookie = f"{COOKIE}={urllib.parse.quote(token)}; HttpOnly; SameSite=Strict; Path=/{secure}"
        self._send(303, b"", "text/plain", {"Location": next_path, "Set-Cookie": cookie})

    def _method_not_allowed(self) -> None:
        self._send(405, b"read-only\n", "text/plain", {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed


def start_web(cfg: Config, store: Store[Any], listen: str) -> WebView | None:
    """The read-only web view over ``store`` on ``listen`` (None when empty), with the collector's TLS and token."""
    if not listen:
        return None
    return WebView(store, listen, insecure=cfg["collector.insecure"], tls_cert=cfg["collector.tls_cert"],
                   tls_key=cfg["collector.tls_key"], tls_client_ca=cfg["collector.tls_client_ca"],
                   query_token=cfg["collector.query_token"]).start()
