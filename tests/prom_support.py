"""A real Prometheus (and Alertmanager) on loopback for tests: Debian's binaries, a throwaway data dir.

``PrometheusServer`` scrapes the given targets every second and evaluates the shipped rules
(``packaging/prometheus/dnstrace-rules.yml``) every second; the rules' ``for:`` durations are
shortened to 0s in the test's copy (nothing else is changed) so an alert fires on the first
evaluation that sees its condition.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from dnstrace.lab.netns import stop_process

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "packaging" / "prometheus" / "dnstrace-rules.yml"
DASHBOARDS = REPO / "packaging" / "grafana" / "dashboards"
PROMETHEUS, PROMTOOL, ALERTMANAGER = "/usr/bin/prometheus", "/usr/bin/promtool", "/usr/bin/prometheus-alertmanager"


def missing_binaries() -> str | None:
    for path in (PROMETHEUS, PROMTOOL, ALERTMANAGER):
        if not shutil.which(path):
            return f"{path} is not installed (Debian packages prometheus, prometheus-alertmanager; scripts/dev setup)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout_s: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.load(response)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


class _Process:
    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        stop_process(self.proc, grace_s=15)
        self._log.close()


class AlertmanagerServer(_Process):
    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "alertmanager.yml"
        config.write_text("route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n"
                          "  - name: none\n")
        super().__init__([ALERTMANAGER, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                         workdir / "alertmanager.log")
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_until(self._ready, 30):
            self.stop()
            raise RuntimeError("alertmanager did not start:\n" + self.log_tail())

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def active_alerts(self, name: str) -> list[dict]:
        alerts = get_json(self.url + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
        return [a for a in alerts if a["labels"].get("alertname") == name and a["status"]["state"] == "active"]


class PrometheusServer(_Process):
    def __init__(self, workdir: Path, targets: list[str], alertmanager: str = ""):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        rules = workdir / "dnstrace-rules.yml"
        rules.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", RULES.read_text()))
        alerting = (f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n"
                    if alertmanager else "")
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                          f"rule_files: ['{rules}']\n{alerting}"
                          "scrape_configs:\n  - job_name: dnstrace-agent\n    static_configs:\n"
                          f"      - targets: {json.dumps(targets)}\n")
        super().__init__([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                          f"--web.listen-address=127.0.0.1:{self.port}"], workdir / "prometheus.log")
        self.url = f"http://127.0.0.1:{self.port}"
        if not wait_until(self._ready, 60):
            self.stop()
            raise RuntimeError("prometheus did not start:\n" + self.log_tail())

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        """Instant query; raises with Prometheus's message when the expression is wrong."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = get_json(url)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"prometheus refused {expr!r}: {err.read().decode(errors='replace')}") from None
        return answer["data"]["result"]

    def alerts(self, name: str, state: str = "firing") -> list[dict]:
        alerts = get_json(self.url + "/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["labels"].get("alertname") == name and a["state"] == state]

    def targets_up(self) -> bool:
        targets = get_json(self.url + "/api/v1/targets")["data"]["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every Prometheus target of a Grafana dashboard JSON."""
    dashboard = json.loads(path.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "expr" in target:
                found.append((panel["title"], target["expr"]))
    return found


def concrete(expr: str, rate_window: str = "30s") -> str:
    """A dashboard expression with Grafana's variables replaced as Grafana would (all nodes selected)."""
    return expr.replace("$__rate_interval", rate_window).replace('=~"$instance"', '=~".*"')
