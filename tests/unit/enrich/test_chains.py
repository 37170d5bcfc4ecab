"""chains: finding the process behind a nameserver address in a fake /proc, and joining upstream queries."""

from __future__ import annotations

import os

from dnstrace.enrich.chains import LocalServer, LocalServerFinder, UpstreamIndex, listening_inodes

UDP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"  # noqa: E501 (recorded data)


def fake_proc(tmp_path, netns_file="netA"):
    proc = tmp_path / "proc"
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "netA").write_text("")
    (tmp_path / "ns" / "netB").write_text("")
    for pid, ns, comm, fds in ((10, "netA", "checkout-api", []), (20, "netA", "unbound", ["socket:[777]"]),
                               (30, "netB", "dnsmasq", ["socket:[888]"])):
        d = proc / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "fd").mkdir()
        (d / "net").mkdir()
        os.symlink(tmp_path / "ns" / ns, d / "ns" / "net")
        for i, target in enumerate(fds):
            os.symlink(target, d / "fd" / str(i + 3))
        (d / "comm").write_text(comm + "\n")
        # 127.0.0.1:53 (0100007F:0035) bound, unconnected (07), inode 777 in netA; 888 in netB
        inode = 777 if ns == "netA" else 888
        (d / "net" / "udp").write_text(UDP_HEADER + f"   1: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 "
                                       f"00000000     0        0 {inode} 2 0000000000000000 0\n")
        (d / "net" / "udp6").write_text(UDP_HEADER)
    return str(proc)


def test_listening_socket_and_its_owner_in_the_clients_netns(tmp_path):
    proc = fake_proc(tmp_path)
    assert listening_inodes(10, "127.0.0.1", 53, proc) == [777]
    assert listening_inodes(10, "127.0.0.1", 5353, proc) == []
    finder = LocalServerFinder(proc=proc)
    local = finder.find(10, "127.0.0.1", 53, now_ns=1)
    assert local == LocalServer(20, "unbound", "unbound", "127.0.0.1", 53)
    assert finder.find(10, "10.0.0.2", 53, now_ns=2) is None


def test_a_client_seen_alive_keeps_its_cache_after_exit_and_nothing_is_guessed_otherwise(tmp_path):
    proc = fake_proc(tmp_path)
    finder = LocalServerFinder(proc=proc)
    assert finder.find(10, "127.0.0.1", 53, now_ns=1).pid == 20
    os.unlink(os.path.join(proc, "10", "ns", "net"))  # the client exited
    assert finder.find(10, "127.0.0.1", 53, now_ns=20_000_000_000).pid == 20
    assert finder.find(11, "127.0.0.1", 53, now_ns=3) is None  # never seen alive: no guess from another netns


def test_upstream_queries_of_the_cache_for_the_same_question_while_the_app_waited():
    index = UpstreamIndex()
    cache = LocalServer(20, "dnsmasq", "dnsmasq", "127.0.0.1", 53)
    app_attempt = {"ts": 1000, "pid": 10, "qname": "Web.Example.Test", "qtype": "A", "answered": True,
                   "latency_ns": 5_000_000}
    for event in ({"pid": 20, "comm": "dnsmasq", "ts": 1500, "qname": "web.example.test", "qtype": "A", "id": 1},
                  {"pid": 21, "comm": "dnsmasq", "ts": 2500, "qname": "web.example.test", "qtype": "A", "id": 2},
                  {"pid": 20, "comm": "dnsmasq", "ts": 1600, "qname": "web.example.test", "qtype": "AAAA", "id": 3},
                  {"pid": 20, "comm": "dnsmasq", "ts": 90_000_000, "qname": "web.example.test", "qtype": "A",
                   "id": 4},
                  {"pid": 99, "comm": "app", "ts": 1700, "qname": "web.example.test", "qtype": "A", "id": 5}):
        index.add(event)
    found = index.upstream_of(app_attempt, cache)
    assert [e["id"] for e in found] == [1, 2]  # the forked child (pid 21) too; not AAAA, not later, not an app
