"""resolv.conf parsing (glibc's rules) and the per-mount-namespace cache."""

from __future__ import annotations

import os
from dataclasses import replace

from dnstrace.enrich import resolvconf
from dnstrace.enrich.resolvconf import ResolvConf, ResolvConfCache, parse


def test_full_file():
    conf = parse(
        "# comment\n"
        "nameserver 10.0.0.9\n"
        "nameserver fd53::2%eth0\n"
        "nameserver not-an-address\n"
        "domain old.example\n"
        "search svc.cluster.local cluster.local.  ; trailing comment\n"
        "options ndots:5 timeout:1 attempts:3 rotate single-request single-request-reopen use-vc edns0\n"
    )
    assert conf.nameservers == ("10.0.0.9", "fd53::2")
    assert conf.search == ("svc.cluster.local", "cluster.local")
    assert (conf.ndots, conf.timeout_s, conf.attempts) == (5, 1, 3)
    assert conf.rotate and conf.single_request and conf.single_request_reopen and conf.use_vc and conf.edns0
    assert conf.server_index("fd53::2") == 1 and conf.server_index("1.1.1.1") is None


def test_defaults_and_clamping():
    conf = parse("nameserver 1.1.1.1\noptions ndots:99 timeout:0 attempts:x\n")
    assert (conf.ndots, conf.timeout_s, conf.attempts) == (15, 1, 2)
    assert not conf.rotate and conf.search == ()
    empty = parse("")
    assert empty.timeout_s == 5 and empty.nameservers == ()


def test_only_three_nameservers_are_used():
    conf = parse("".join(f"nameserver 10.0.0.{i}\n" for i in range(1, 6)))
    assert conf.nameservers == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert conf.extra_nameservers == ("10.0.0.4", "10.0.0.5")


def test_last_search_or_domain_wins():
    assert parse("search a.test b.test\ndomain c.test\n").search == ("c.test",)


def test_as_dict_names_every_option():
    keys = set(parse("").as_dict())
    assert {"nameservers", "search", "ndots", "timeout", "attempts", "rotate", "single_request",
            "single_request_reopen", "use_vc", "edns0"} <= keys


FILES = ("", "nameserver 10.0.0.9\nnameserver 10.0.0.2\nsearch b.svc c.svc\noptions ndots:5 timeout:1 attempts:3\n",
         "nameserver fd53::2\noptions rotate single-request use-vc edns0 single-request-reopen timeout:30\n")


def test_both_event_shapes_read_back_into_the_same_typed_conf():
    for text in FILES:
        conf = replace(parse(text), source=None)
        assert ResolvConf.of_event(conf.enrichment_fields()) == conf
        assert ResolvConf.of_event({"resolv_conf": conf.as_dict()}) == conf
        assert conf.enrichment_fields()["resolv_options"] == conf.options()


def test_event_shapes_are_read_as_parse_reads_options():
    words = {"nameservers": ["10.0.0.1"], "resolv_options": ["ndots:99", "timeout:0", "attempts:x", "use_vc", "rotate"]}
    conf = ResolvConf.of_event(words)
    assert conf == parse("nameserver 10.0.0.1\noptions ndots:99 timeout:0 attempts:x use_vc rotate\n")
    assert (conf.ndots, conf.timeout_s, conf.attempts, conf.use_vc, conf.rotate) == (15, 1, 2, False, True)
    as_dict = ResolvConf.of_event({"resolv_conf": {"nameservers": ["10.0.0.1"], "timeout": 1.0, "ndots": None}})
    assert (as_dict.timeout_s, as_dict.ndots, as_dict.attempts) == (1, 1, 2)


def test_which_shape_an_event_is_read_from():
    enriched = {"nameservers": ["10.0.0.1"], "search": [], "resolv_options": ["timeout:2"]}
    signal = {"resolv_conf": {"nameservers": ["10.0.0.7"], "timeout": 3}}
    assert ResolvConf.of_event({**enriched, **signal}).nameservers == ("10.0.0.1",)
    # the enricher found no nameserver: the lookups signal's dict says more
    assert ResolvConf.of_event({**enriched, "nameservers": [], **signal}).timeout_s == 3
    assert ResolvConf.of_event({"search": ["a.test"]}).search == ("a.test",)
    assert ResolvConf.of_event({"kind": "dns", "qname": "x"}) is None


def test_cache_reads_once_per_mount_namespace_and_notices_edits(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf_file = root / "etc" / "resolv.conf"
    conf_file.write_text("nameserver 10.0.0.1\n")
    monkeypatch.setattr(resolvconf.proc, "process_root", lambda pid: str(root))
    monkeypatch.setattr(resolvconf.proc, "ns_inode", lambda pid, ns: 4026531840)
    cache = ResolvConfCache(max_entries=2)
    assert cache.for_pid(1).nameservers == ("10.0.0.1",)
    assert cache.for_pid(2).nameservers == ("10.0.0.1",)
    assert cache.reads == 1
    conf_file.write_text("nameserver 10.0.0.2\nnameserver 10.0.0.3\n")
    os.utime(conf_file, ns=(1, 1))  # a different mtime even on coarse clocks
    assert cache.for_pid(3).nameservers == ("10.0.0.2", "10.0.0.3")
    assert cache.reads == 2


def test_cache_is_bounded(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text("nameserver 10.0.0.1\n")
    monkeypatch.setattr(resolvconf.proc, "process_root", lambda pid: str(tmp_path))
    monkeypatch.setattr(resolvconf.proc, "ns_inode", lambda pid, ns: pid)  # one namespace per pid
    cache = ResolvConfCache(max_entries=3)
    for pid in range(10):
        cache.for_pid(pid)
    assert len(cache._by_mntns) == 3 and cache.evictions == 7


def test_gone_process_gives_none():
    assert ResolvConfCache().for_pid(2**22 + 12345) is None


def test_recheck_window_skips_the_stat_and_gone_process_keeps_its_namespace_view(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    conf_file = tmp_path / "etc" / "resolv.conf"
    conf_file.write_text("nameserver 10.0.0.1\n")
    monkeypatch.setattr(resolvconf.proc, "process_root", lambda pid: str(tmp_path))
    stats = []
    real_signature = resolvconf.file_signature
    monkeypatch.setattr(resolvconf, "file_signature", lambda pid: stats.append(pid) or real_signature(pid))
    cache = ResolvConfCache(recheck_s=3600)
    assert cache.for_pid(1, mnt_ns=77).nameservers == ("10.0.0.1",)
    conf_file.write_text("nameserver 10.0.0.2\n")
    assert cache.for_pid(2, mnt_ns=77).nameservers == ("10.0.0.1",)  # within the window: no stat, no read
    assert stats == [1] and cache.reads == 1
    # the process exited (its root is gone): the namespace's last view, not nothing
    monkeypatch.setattr(resolvconf.proc, "process_root", lambda pid: str(tmp_path / "gone"))
    monkeypatch.setattr(resolvconf.proc, "read_comm", lambda pid: None)
    cache.recheck_ns = 0
    assert cache.for_pid(3, mnt_ns=77).nameservers == ("10.0.0.1",)
    assert cache.for_pid(4, mnt_ns=78) is None
