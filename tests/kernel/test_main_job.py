"""The README's main job (`scripts/dev run` = `dnstrace top --agent`) records what it shows:
events and findings land in the embedded collector and `dnstrace query` answers about them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from dnstrace.lab.resolvers import build_resolver_lab
from support import DNSTRACE

pytestmark = pytest.mark.kernel

LOOKUP_LOOP = ("import socket, sys, time\nprint(flush=True)\nsys.stdin.readline()\n"
               "for _ in range(12):\n    socket.getaddrinfo('web.example.test', 80)\n    time.sleep(0.2)\n"
               "time.sleep(30)\n")


def test_top_agent_records_into_the_embedded_collector(lab, tmp_path):
    resolver = build_resolver_lab(lab)
    resolver.resolv_conf([resolver.dead_v4, resolver.server_v4], options=["timeout:1", "attempts:1"])
    client = resolver.client.popen([sys.executable, "-c", LOOKUP_LOOP], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    client.stdout.readline()
    store = tmp_path / "node.duckdb"
    paths = ["--lock-file", str(tmp_path / "agent.lock"), "--spool", str(tmp_path / "spool"),
             "--embedded-store", f"duckdb:{store}", "--embedded-listen", f"unix:{tmp_path / 'c.sock'}"]
    env = dict(os.environ, DNSTRACE_CONFIG=os.devnull)
    top = subprocess.Popen(DNSTRACE + ["top", "--agent", "--once", "--json", "--duration", "8s",
                                       "--signals", "lookups", *paths],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.5)
    deadline = time.monotonic() + 60
    while not os.path.exists(tmp_path / "c.sock") and time.monotonic() < deadline:  # attached soon after
        time.sleep(0.2)
    time.sleep(2)
    client.stdin.write("go\n")
    client.stdin.flush()
    out, err = top.communicate(timeout=120)
    assert top.returncode == 0, err
    snapshot = json.loads(out)
    assert any(row["pid"] == client.pid for row in snapshot["rows"]), snapshot["rows"][:5]

    # The node's store now holds the events: serve it and ask.
    sock = tmp_path / "q.sock"
    collector = subprocess.Popen(DNSTRACE + ["collector", "--listen", f"unix:{sock}", "--store", f"duckdb:{store}"],
                                 stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "collector listening" in collector.stderr.readline()
        query = subprocess.run(DNSTRACE + ["query", "--collector", f"unix:{sock}", "--since", "10m",
                                           "--kind", "gai", "--pid", str(client.pid), "--json"],
                               capture_output=True, text=True, timeout=60, env=env)
        assert query.returncode == 0, query.stderr
        rows = [json.loads(line) for line in query.stdout.splitlines()]
        assert rows and all(r["pid"] == client.pid and r["name"] == "web.example.test" for r in rows)
        assert all(0.9e9 <= r["latency_ns"] <= 1.8e9 for r in rows)  # the dead first nameserver's timeout
        # What the README's quick start asks: the joined lookups, with the attempt at the dead server.
        lookups = subprocess.run(DNSTRACE + ["query", "--collector", f"unix:{sock}", "--since", "5m",
                                             "--kind", "lookup", "--pid", str(client.pid), "--json"],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert lookups.returncode == 0, lookups.stderr
        lookup_rows = [json.loads(line) for line in lookups.stdout.splitlines()]
        assert lookup_rows and all(r["pid"] == client.pid and r["name"] == "web.example.test" for r in lookup_rows)
        # One lookup per libc call: each call the gai probe saw is one gai-sourced lookup at the same instant. A call
        # already under way when the uprobes attached has no gai event; its DNS on the wire still makes a lookup
        # (source "wire"), and only before the first call the probe saw.
        from_gai = sorted(r["ts"] for r in lookup_rows if r["source"] == "gai")
        assert from_gai == sorted(r["ts"] for r in rows), "one lookup per libc call"
        early = [r for r in lookup_rows if r["source"] != "gai"]
        assert all(r["source"] == "wire" and r["ts"] < min(from_gai) for r in early), early
        assert len(early) <= 1
        findings = subprocess.run(DNSTRACE + ["query", "--collector", f"unix:{sock}", "--since", "10m",
                                              "--kind", "finding", "--rule", "dead-nameserver", "--json"],
                                  capture_output=True, text=True, timeout=60, env=env)
        assert findings.returncode == 0, findings.stderr
        assert any(str(client.pid) in line and "10.53.0.9" in line for line in findings.stdout.splitlines())
    finally:
        collector.terminate()
        collector.wait(15)
        client.kill()
