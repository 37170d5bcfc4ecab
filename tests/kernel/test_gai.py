"""The gai signal against the real kernel: lookups through glibc, musl and a private libc copy.

One tracer (``dnstrace trace gai --json``, libc rescan every second) serves the
whole module; clients run in a lab client namespace whose resolv.conf has a dead
first nameserver (``timeout:1 attempts:1``) and a live dnsmasq second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import TraceProcess

CLIENT_SOURCE = Path(__file__).parent / "clients" / "gaiclient.c"


def _own_mapping(predicate) -> str:
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and predicate(os.path.basename(fields[5].strip())):
                return fields[5].strip()
    raise AssertionError("mapping not found in /proc/self/maps")


@pytest.fixture(scope="module")
def build_dir():
    path = tempfile.mkdtemp(prefix="dt-gai-test-")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def glibc_client(kernel, build_dir) -> str:
    out = build_dir / "gaiclient"
    subprocess.run(["gcc", "-O1", "-o", str(out), str(CLIENT_SOURCE)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def musl_client(kernel, build_dir) -> str:
    if not shutil.which("musl-gcc"):
        pytest.fail("musl-gcc is missing: apt-get install musl-tools (scripts/dev setup installs it)")
    out = build_dir / "gaiclient-musl"
    subprocess.run(["musl-gcc", "-O1", "-o", str(out), str(CLIENT_SOURCE)], check=True)
    return str(out)


@pytest.fixture(scope="module")
def resolver(kernel):
    from dnstrace.lab.netns import Lab
    from dnstrace.lab.resolvers import build_resolver_lab

    with Lab() as lab:
        r = build_resolver_lab(lab)
        r.resolv_conf([r.dead_v4, r.server_v4], ["timeout:1", "attempts:1"])
        yield r


@pytest.fixture(scope="module")
def tracer(kernel):
    tp = TraceProcess(["trace", "gai", "--json", "--libc-rescan-interval", "1s"])
    yield tp
    tp.stop()


class Client:
    """A client process in the lab namespace: knows its pid before it resolves anything."""

    def __init__(self, resolver, argv: list[str]):
        self.proc = resolver.client.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("pid "), f"client said {first!r}"
        self.pid = int(first.split()[1])

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, timeout_s: float = 20.0) -> str:
        out, _ = self.proc.communicate(timeout=timeout_s)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def test_dead_first_nameserver_shows_one_second_lookup(resolver, tracer, glibc_client):
    client = Client(resolver, [glibc_client, "web.example.test"])
    client.go()
    out = client.finish()
    assert "web.example.test 0" in out, out
    events = tracer.wait_for(lambda e: e["pid"] == client.pid and e["name"] == "web.example.test")
    assert len(events) == 1, events
    event = events[0]
    assert event["kind"] == "gai"
    assert event["comm"] == "gaiclient"
    assert event["tid"] == client.pid
    assert event["func"] == "getaddrinfo"
    assert event["error"] is None
    assert 0.95e9 <= event["latency_ns"] <= 1.8e9, event
    assert abs(event["ts"] - time.time_ns()) < 60e9  # unix time, not boot time
    assert event["libc"] and os.path.samefile(event["libc"], _own_mapping(lambda b: b == "libc.so.6"))


def test_missing_name_reports_eai_noname_and_gethostbyname_null(resolver, tracer, glibc_client):
    client = Client(resolver, [glibc_client, "nope.example.test", "h:nope2.example.test"])
    client.go()
    out = client.finish()
    assert "nope.example.test -2" in out and "h:nope2.example.test null" in out, out
    gai = tracer.wait_for(lambda e: e["pid"] == client.pid and e["name"] == "nope.example.test")
    ghbn = tracer.wait_for(lambda e: e["pid"] == client.pid and e["name"] == "nope2.example.test")
    assert [e["error"] for e in gai] == ["EAI_NONAME"]
    assert [(e["func"], e["error"]) for e in ghbn] == [("gethostbyname", "NULL")]
    assert 0.95e9 <= gai[0]["latency_ns"] <= 1.8e9


def test_names_at_the_short_record_boundary_and_long_names_arrive_whole(resolver, tracer, glibc_client):
    # bpf/gai.bpf.c puts names of up to 62 characters in a short record and reads longer
    # ones again into a full-size one: both sides of that boundary and a long name.
    names = [("b" * (length - len(".example.test")) + ".example.test") for length in (62, 63, 200)]
    client = Client(resolver, [glibc_client, *names])
    client.go()
    client.finish()
    for name in names:
        events = tracer.wait_for(lambda e, name=name: e["pid"] == client.pid and e["name"] == name)
        assert [e["error"] for e in events] == ["EAI_NONAME"], (len(name), events)


def test_musl_client_is_traced(resolver, tracer, musl_client):
    # -l: resolve every 300 ms until told to stop, so the tracer's 1 s rescan can find musl first.
    client = Client(resolver, [musl_client, "-l", "api.example.test"])
    try:
        client.go()
        events = tracer.wait_for(lambda e: e["pid"] == client.pid, timeout_s=20)
    finally:
        client.stop()
    assert events, "no event from the musl client:\n" + "".join(tracer.stderr_lines[-20:])
    event = events[0]
    assert event["name"] == "api.example.test"
    assert event["comm"] == "gaiclient-musl"
    assert event["error"] is None
    assert "musl" in event["libc"], event


def test_private_libc_copy_in_own_mount_namespace_is_traced(resolver, tracer, glibc_client):
    """libc and ld.so copied to a tmpfs that exists only in the client's mount namespace."""
    libc = _own_mapping(lambda b: b == "libc.so.6")
    loader = _own_mapping(lambda b: b.startswith("ld-linux"))
    private_dir = tempfile.mkdtemp(prefix="dt-ownlibc-")
    script = (
        f"mount -t tmpfs dt-ownlibc {private_dir} && cp {libc} {loader} {glibc_client} {private_dir}/ && "
        f"exec {private_dir}/{os.path.basename(loader)} --library-path {private_dir} "
        f"{private_dir}/gaiclient -l api.example.test"
    )
    client = Client(resolver, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    try:
        maps = Path(f"/proc/{client.pid}/maps").read_text()
        assert f"{private_dir}/libc.so.6" in maps
        assert not os.path.exists(f"{private_dir}/libc.so.6")  # invisible from the host's mount namespace
        client.go()
        events = tracer.wait_for(lambda e: e["pid"] == client.pid, timeout_s=20)
    finally:
        client.stop()
        shutil.rmtree(private_dir, ignore_errors=True)
    assert events, "no event from the private-libc client:\n" + "".join(tracer.stderr_lines[-20:])
    event = events[0]
    assert event["name"] == "api.example.test" and event["error"] is None
    assert event["libc"] == f"/proc/{client.pid}/root{private_dir}/libc.so.6", event


def test_calls_in_flight_at_attach_and_detach_yield_no_garbage(resolver, glibc_client):
    """A client loops over 1 s lookups while a second tracer attaches and later detaches.

    Most of the time a call is in flight at attach (and at detach): with the return
    probe attached first it has no entry and is ignored, so every event seen is a
    whole ~1 s call; a half-seen call would show a latency far from 1 s.
    """
    client = Client(resolver, [glibc_client, "-l", "web.example.test"])
    try:
        client.go()
        time.sleep(0.5)  # the first lookup is now waiting on the dead nameserver
        late = TraceProcess(["trace", "gai", "--json", "--pid", str(client.pid)])
        try:
            events = late.wait_for(lambda e: True, timeout_s=10)
            time.sleep(1.5)
        finally:
            assert late.stop() == 0
        seen = late.snapshot()
    finally:
        client.stop()
    assert events, "no event from a client looping on lookups"
    for event in seen:
        assert event["pid"] == client.pid and event["name"] == "web.example.test", event
        assert 0.95e9 <= event["latency_ns"] <= 1.8e9, event
