"""The web view of a real lab run: `dnstrace agent` (embedded collector, agent.web_listen) traces the
dead-nameserver lab; headless Chromium opens the slow lookups, the waterfall, the heatmap and the
nameserver page and finds the lab's process, its dead first nameserver's timeout and the answer
from the second one."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request

import pytest

from dnstrace.lab.incidents import BY_NAME
from dnstrace.lab.netns import Lab
from prom_support import free_port, wait_until
from support import DNSTRACE, click_and_wait

pytestmark = pytest.mark.kernel
TOKEN = "lab-query-token"


def _up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def test_lab_run_in_the_browser(kernel, chromium, tmp_path):
    web_port, health_port = free_port(), free_port()
    env = dict(os.environ, DNSTRACE_CONFIG=os.devnull, DNSTRACE_COLLECTOR_INSECURE="true",
               DNSTRACE_COLLECTOR_QUERY_TOKEN=TOKEN)
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen(DNSTRACE + ["agent", "--signals", "lookups,tcp", "--lock-file", str(tmp_path / "lock"),
                                         "--spool-dir", str(tmp_path / "spool"),
                                         "--embedded-store", f"duckdb:{tmp_path / 'node.duckdb'}",
                                         "--embedded-listen", f"unix:{tmp_path / 'c.sock'}",
                                         "--web-listen", f"127.0.0.1:{web_port}",
                                         "--health-addr", f"127.0.0.1:{health_port}"],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{web_port}"
    try:
        assert wait_until(lambda: agent.poll() is None and _up(f"http://127.0.0.1:{health_port}/readyz"), 120), \
            (tmp_path / "agent.log").read_text()[-3000:]
        with Lab() as lab:
            running = BY_NAME["dead-nameserver"].build(lab)
            time.sleep(8)  # a dozen lookups, each waiting 1 s for the dead nameserver
            chromium.get(f"{base}/lookups?since=5m&min_latency=900ms&pid={running.pid}")
            assert "needs its query token" in chromium.page_source  # nothing without the token
            chromium.find_element("name", "token").send_keys(TOKEN)
            click_and_wait(chromium, chromium.find_element("css selector", "button[type=submit]"))

            def listed():
                chromium.refresh()
                return chromium.find_elements("css selector", "#lookups a.waterfall-link")

            links = wait_until(listed, 60, interval_s=1)
            assert links, (chromium.page_source[-2000:], (tmp_path / "agent.log").read_text()[-3000:])
            rows = chromium.find_elements("css selector", "#lookups tr.lookup")
            assert all(f"\n{running.pid}\n" in f"\n{r.text.replace(' ', chr(10))}\n" for r in rows)
            click_and_wait(chromium, links[0])
            attempts = chromium.find_elements("css selector", "#waterfall tr.attempt")
            assert attempts, chromium.page_source[-2000:]
            first = attempts[0]
            assert first.find_element("css selector", ".server").text == f"{running.address}:53"
            assert "no answer: timeout after 1.00s" in first.find_element("css selector", ".outcome").text
            answered = [a for a in attempts if "NOERROR" in a.find_element("css selector", ".outcome").text]
            assert answered and running.address not in answered[0].find_element("css selector", ".server").text
            assert "kafka-writer" in chromium.page_source
            chromium.save_screenshot(str(tmp_path / "lab-waterfall.png"))

            chromium.get(f"{base}/latency?since=5m&comm=kafka-writer&by=comm")
            assert chromium.execute_script("return document.body.dataset.rendered") == "yes"
            titles = [t.text for t in chromium.find_elements("css selector", "#charts .heatmap .u-title")]
            assert titles and "kafka-writer" in titles[0]
            chromium.save_screenshot(str(tmp_path / "lab-heatmap.png"))

            chromium.get(f"{base}/servers?since=5m&pid={running.pid}")
            servers = {r.find_element("css selector", "td:nth-child(2)").text: r
                       for r in chromium.find_elements("css selector", "#servers tr.server")}
            assert int(servers[running.address].find_element("css selector", ".unanswered").text) >= 3
            assert int(servers[running.address].find_element("css selector", ".answered").text) == 0
            chromium.save_screenshot(str(tmp_path / "lab-servers.png"))
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)
        log.close()
