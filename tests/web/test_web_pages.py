"""The collector's web view in a real headless Chromium, over a collector store fed with a recorded
lab-like stream (the dead-nameserver incident on two hosts; a real lab run: test_web_lab.py).

Every page renders with data, the waterfall shows the dead nameserver's timeout and the answer
from the second server (and a TCP retry's SYN retransmit), filters change the URL and the data,
and without the query token nothing is shown. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from dnstrace.collector.store.base import BatchKey
from dnstrace.collector.store.from_url import open_store
from dnstrace.collector.web import WebView
from dnstrace.wire.codec import decode_batch, encode_events
from support import click_and_wait

S = 1_000_000_000
TOKEN = "s3cret-query-token"


def _stream(host: str, now_ns: int, pid: int) -> list[dict]:
    events = []
    for i in range(40):
        ts = now_ns - (40 - i) * 20 * S
        common = {"host": host, "pid": pid, "tid": pid, "comm": "kafka-writer", "container": ""}
        dead = {"ts": ts + 40_000, "qname": "web.example.test", "qtype": "A", "server": "10.53.0.9", "dport": 53,
                "proto": "udp", "sport": 41000 + i, "answered": False, "timeout_ns": S}
        good = {"ts": ts + S + 50_000, "qname": "web.example.test", "qtype": "A", "server": "10.53.0.2",
                "dport": 53, "proto": "udp", "sport": 42000 + i, "answered": True, "rcode": "NOERROR",
                "latency_ns": 300_000 + i * 1000, "tc": i % 10 == 0, "ancount": 1, "answers": ["10.53.1.80"]}
        attempts = [dead, good]
        if i % 10 == 0:
            attempts.append({"ts": ts + S + 400_000, "qname": "web.example.test", "qtype": "A",
                             "server": "10.53.0.2", "dport": 53, "proto": "tcp", "sport": 43000 + i,
                             "answered": True, "rcode": "NOERROR", "latency_ns": 1_100_000_000,
                             "tcp_fallback": True, "ancount": 1, "answers": ["10.53.1.80"]})
            events.append(dict(common, kind="syn_retry", ts=ts + S + 1_400_000, saddr="10.53.0.5",
                               sport=43000 + i, daddr="10.53.0.2", dport=53, retry=1, elapsed_ns=S))
            events.append(dict(common, kind="connect", ts=ts + S + 400_000, saddr="10.53.0.5", sport=43000 + i,
                               daddr="10.53.0.2", dport=53, latency_ns=S + 1_000_000, retries=1,
                               result="established"))
        latency = max(a["ts"] + (a.get("latency_ns") or S) for a in attempts) - ts
        events.append(dict(common, kind="lookup", ts=ts, name="web.example.test", latency_ns=latency, error=None,
                           source="gai", func="getaddrinfo", attempts=attempts, timeouts=1,
                           servers=["10.53.0.9", "10.53.0.2"],
                           resolv_conf={"nameservers": ["10.53.0.9", "10.53.0.2"], "timeout": 1.0, "attempts": 1}))
        events.append(dict(common, kind="dns", **dead))
        events.append(dict(common, kind="dns", **good))
        # A fast lookup by another process: filters must tell them apart.
        events.append(dict(common, kind="lookup", ts=ts + 5 * S, pid=pid + 1, tid=pid + 1, comm="curl",
                           name="fast.example.test", latency_ns=800_000 + i * 10_000, error=None, source="gai",
                           attempts=[dict(good, ts=ts + 5 * S + 10_000)]))
    events.append(dict(host=host, kind="finding", ts=now_ns - 60 * S, pid=pid, comm="kafka-writer",
                       rule="dead-nameserver", severity="critical",
                       summary=f"lookups by pid {pid} (kafka-writer) take 1.00s: nameserver 10.53.0.9 never answered",
                       fix="Remove or replace 'nameserver 10.53.0.9'", pids=[pid], comms=["kafka-writer"]))
    return events


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    store = open_store(f"duckdb:{tmp_path_factory.mktemp('web')}/c.duckdb")
    now = time.time_ns()
    for seq, (host, pid) in enumerate((("node-a", 4242), ("node-b", 5151)), start=1):
        events = _stream(host, now, pid)
        assert store.insert(BatchKey(host, "boot", 1, seq), decode_batch(encode_events(events)))
    view = WebView(store, "127.0.0.1:0", insecure=True, query_token=TOKEN).start()
    yield view
    view.stop()
    store.close()


def _login(driver, web, path="/fleet"):
    driver.get(web.url + path)
    assert "needs its query token" in driver.page_source
    driver.find_element("name", "token").send_keys(TOKEN)
    click_and_wait(driver, driver.find_element("css selector", "button[type=submit]"))
    assert "needs its query token" not in driver.page_source


def test_unauthorized_requests_are_refused(web, chromium, tmp_path):
    for path in ("/fleet", "/lookups?since=1h", "/static/app.js", "/servers"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(web.url + path, timeout=10)
        assert refused.value.code == 401
        assert b"kafka-writer" not in refused.value.read()
    wrong = urllib.request.Request(web.url + "/fleet", headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code == 401
    ok = urllib.request.Request(web.url + "/fleet", headers={"Authorization": f"Bearer {TOKEN}"})
    assert b"dead-nameserver" in urllib.request.urlopen(ok, timeout=10).read()
    post = urllib.request.Request(web.url + "/fleet", data=b"x=1", method="POST",
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as read_only:
        urllib.request.urlopen(post, timeout=10)
    assert read_only.value.code == 405
    # In the browser: the login form, then a wrong token is refused and shows no data.
    chromium.get(web.url + "/lookups")
    chromium.find_element("name", "token").send_keys("wrong")
    click_and_wait(chromium, chromium.find_element("css selector", "button[type=submit]"))
    assert "Wrong token" in chromium.page_source and "kafka-writer" not in chromium.page_source
    chromium.save_screenshot(str(tmp_path / "refused.png"))


def test_every_page_renders_with_data(web, chromium, tmp_path):
    _login(chromium, web, "/fleet?since=2h")
    assert chromium.current_url.endswith("/fleet?since=2h")
    findings = chromium.find_elements("css selector", "#findings tr.finding")
    assert findings and "dead-nameserver" in findings[0].text and "node-a, node-b" in findings[0].text
    assert chromium.find_elements("css selector", "#charts .uplot")  # findings over time drawn
    chromium.save_screenshot(str(tmp_path / "fleet.png"))

    chromium.get(web.url + "/latency?since=15m&by=comm")
    assert chromium.execute_script("return document.body.dataset.rendered") == "yes"
    heatmaps = chromium.find_elements("css selector", "#charts .heatmap .uplot")
    titles = [h.text for h in chromium.find_elements("css selector", "#charts .heatmap .u-title")]
    assert len(heatmaps) == 2 and any("kafka-writer" in t for t in titles) and any("curl" in t for t in titles)
    # The heatmap cells are painted: the canvas is not blank.
    painted = chromium.execute_script(
        "const c = document.querySelector('#charts .heatmap canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4)"
        " if (d[i]) n++; return n;")
    assert painted > 1000
    chromium.save_screenshot(str(tmp_path / "heatmap.png"))

    chromium.get(web.url + "/servers?since=2h")
    rows = {r.find_element("css selector", "td:nth-child(2)").text + "@" + r.find_element("css selector", "td").text:
            r for r in chromium.find_elements("css selector", "#servers tr.server")}
    dead = rows["10.53.0.9@node-a"]
    assert dead.find_element("css selector", ".unanswered").text == "40"
    assert dead.find_element("css selector", ".answered").text == "0"
    assert rows["10.53.0.2@node-b"].find_element("css selector", ".unanswered").text == "0"
    chromium.save_screenshot(str(tmp_path / "servers.png"))


def test_waterfall_shows_the_timeout_then_the_answer_from_the_second_server(web, chromium, tmp_path):
    _login(chromium, web, "/lookups?since=2h&min_latency=1s&host=node-a")
    links = chromium.find_elements("css selector", "#lookups a.waterfall-link")
    assert len(links) == 40 and all(link.text == "web.example.test" for link in links)
    click_and_wait(chromium, links[0])
    assert "/lookup?" in chromium.current_url and "pid=4242" in chromium.current_url
    attempts = chromium.find_elements("css selector", "#waterfall tr.attempt")
    first, second = attempts[0], attempts[1]
    assert "timeout" in first.get_attribute("class")
    assert first.find_element("css selector", ".server").text == "10.53.0.9:53"
    assert "no answer: timeout after 1.00s" in first.find_element("css selector", ".outcome").text
    assert second.find_element("css selector", ".server").text == "10.53.0.2:53"
    assert "NOERROR" in second.text and "10.53.1.80" in second.text
    # Bars: the timeout spans about the whole lookup, the answer starts after it.
    widths = chromium.execute_script(
        "return [...document.querySelectorAll('#waterfall tr.attempt .wf > span:first-child')]"
        ".map(s => [s.offsetLeft, s.offsetWidth, s.parentElement.offsetWidth]);")
    (left0, width0, full), (left1, _, _) = widths[0], widths[1]
    assert left0 <= 2 and width0 > 0.4 * full and left1 >= left0 + width0 - 2
    chromium.save_screenshot(str(tmp_path / "waterfall.png"))
    # The oldest one in the list went over TCP after TC, and its SYN was retransmitted.
    chromium.back()
    click_and_wait(chromium, chromium.find_elements("css selector", "#lookups a.waterfall-link")[-1])
    text = chromium.find_element("id", "waterfall").text
    assert "TCP retry after TC" in text and "SYN retransmit #1" in text
    assert "TCP connect established" in text and chromium.find_elements("css selector", ".wf .syn")
    chromium.save_screenshot(str(tmp_path / "waterfall-tcp.png"))


def test_filters_change_the_url_and_the_data(web, chromium):
    _login(chromium, web, "/lookups?since=2h&min_latency=1ms")
    before = chromium.find_elements("css selector", "#lookups tr.lookup")
    assert {r.find_element("css selector", "td:nth-child(2)").text for r in before} == {"node-a", "node-b"}
    chromium.find_element("name", "host").send_keys("node-b")
    chromium.find_element("name", "comm").send_keys("kafka-writer")
    click_and_wait(chromium, chromium.find_element("css selector", "form.filters button"))
    url = chromium.current_url
    assert "host=node-b" in url and "comm=kafka-writer" in url and "pod=" not in url  # empty fields left out
    after = chromium.find_elements("css selector", "#lookups tr.lookup")
    assert after and len(after) < len(before)
    assert {(r.find_element("css selector", "td:nth-child(2)").text,
             r.find_element("css selector", "td:nth-child(4)").text) for r in after} == {("node-b", "kafka-writer")}
    # The URL alone reproduces the view (what gets pasted into the incident channel).
    chromium.get(url)
    assert len(chromium.find_elements("css selector", "#lookups tr.lookup")) == len(after)
    chromium.get(web.url + "/fleet?since=2h&host=nosuchhost")
    assert "no findings in this range" in chromium.page_source
    chromium.get(web.url + "/lookups?since=yesterday-ish")
    assert "not a duration" in chromium.page_source.lower() or "error" in chromium.page_source.lower()


def test_tls_and_plaintext_policy(tmp_path):
    """The web view speaks TLS with the collector's certificate, and refuses plaintext unless told."""
    import shutil
    import ssl
    import subprocess

    from dnstrace.errors import UsageError

    store = open_store(f"duckdb:{tmp_path}/c.duckdb")
    try:
        with pytest.raises(UsageError, match="refusing to serve the web view in plaintext"):
            WebView(store, "127.0.0.1:0")
        if not shutil.which("openssl"):
            pytest.skip("openssl is not installed")
        key, cert = tmp_path / "srv.key", tmp_path / "srv.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        view = WebView(store, "127.0.0.1:0", tls_cert=str(cert), tls_key=str(key), query_token=TOKEN).start()
        try:
            assert view.url.startswith("https://")
            context = ssl.create_default_context(cafile=str(cert))
            request = urllib.request.Request(view.url + "/fleet", headers={"Authorization": f"Bearer {TOKEN}"})
            assert b"Findings" in urllib.request.urlopen(request, context=context, timeout=10).read()
            import http.client

            with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):  # no page
                urllib.request.urlopen(view.url.replace("https://", "http://") + "/fleet", timeout=10).read()
        finally:
            view.stop()
    finally:
        store.close()
