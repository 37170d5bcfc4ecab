"""cgroup path -> container / pod / Nomad allocation / systemd service, and pod names from node files."""

from __future__ import annotations

import json

from dnstrace.enrich.containers import ContainerResolver, parse_cgroup
from dnstrace.enrich.enricher import Enricher
from dnstrace.enrich.resolvconf import parse

CID = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e"
UID = "8a1b2c3d-4e5f-6789-abcd-ef0123456789"


def test_kubernetes_systemd_driver_containerd_and_crio():
    path = (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice/"
            f"cri-containerd-{CID}.scope")
    a = parse_cgroup(path)
    assert (a.runtime, a.container_id, a.pod_uid, a.container) == ("containerd", CID, UID, CID[:12])
    b = parse_cgroup(f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-{CID}.scope")
    assert (b.runtime, b.pod_uid) == ("cri-o", UID)
    c = parse_cgroup(f"/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/crio-conmon-{CID}.scope")
    assert c.container_id == CID


def test_kubernetes_cgroupfs_driver_and_plain_docker():
    a = parse_cgroup(f"/kubepods/besteffort/pod{UID}/{CID}")
    assert (a.pod_uid, a.container_id) == (UID, CID)
    assert parse_cgroup(f"/system.slice/docker-{CID}.scope").runtime == "docker"
    assert parse_cgroup(f"/docker/{CID}").container_id == CID
    assert parse_cgroup(f"/machine.slice/libpod-{CID}.scope").runtime == "podman"


def test_nomad_systemd_and_host():
    alloc = "0f2e1d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    a = parse_cgroup(f"/nomad.slice/share.slice/{alloc}.kafka-writer.scope")
    assert (a.runtime, a.container, a.pod) == ("nomad", "kafka-writer", alloc)
    v1 = parse_cgroup(f"/nomad/{alloc}-web")
    assert (v1.container, v1.pod) == ("web", alloc)
    s = parse_cgroup("/system.slice/kafka.service")
    assert s.service == "kafka.service" and s.is_host and s.fields() == {"container": "", "pod": "", "namespace": ""}
    u = parse_cgroup("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service")
    assert u.service == "foo.service"
    for host in ("/", "", None, "/init.scope", "/user.slice/user-0.slice/session-3.scope"):
        assert parse_cgroup(host).fields() == {"container": "", "pod": "", "namespace": ""}
    # a 64-hex directory not under a runtime is not a container
    assert parse_cgroup(f"/mystuff/{CID}").is_host


def test_pod_names_from_cri_annotations_docker_labels_and_kubelet(tmp_path):
    bundle = tmp_path / f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"annotations": {
        "io.kubernetes.cri.sandbox-name": "web-7d9f", "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.container-name": "nginx"}}))
    resolver = ContainerResolver(root=str(tmp_path))
    a = resolver.resolve(f"/kubepods/pod{UID}/{CID}")
    assert (a.pod, a.namespace, a.container) == ("web-7d9f", "shop", "nginx")

    other = "a" * 64
    docker = tmp_path / f"var/lib/docker/containers/{other}"
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_text(json.dumps({"Name": "/redis", "Config": {"Labels": {}}}))
    assert resolver.resolve(f"/system.slice/docker-{other}.scope").container == "redis"

    uid2 = "11111111-2222-3333-4444-555555555555"
    pod_dir = tmp_path / f"var/lib/kubelet/pods/{uid2}"
    (pod_dir / "volumes/kubernetes.io~projected/kube-api-access-x").mkdir(parents=True)
    (pod_dir / "volumes/kubernetes.io~projected/kube-api-access-x/namespace").write_text("payments\n")
    (pod_dir / "etc-hosts").write_text("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                                       "::1\tlocalhost ip6-localhost\n10.2.3.4\tapi-5c6d\n")
    b = resolver.resolve(f"/kubepods/burstable/pod{uid2}/{'b' * 64}")
    assert (b.pod, b.namespace, b.container) == ("api-5c6d", "payments", "b" * 12)
    # unknown container: ids only, no error
    c = resolver.resolve(f"/kubepods/pod{UID}/{'c' * 64}")
    assert c.container == "c" * 12 and c.pod == ""


def test_resolv_conf_enrichment_fields():
    conf = parse("# x\nnameserver 10.0.0.9\nnameserver 10.0.0.2 # second\ndomain a\n"
                 "search b.svc c.svc\noptions ndots:5 timeout:1\noptions rotate\n")
    assert conf.enrichment_fields() == {"nameservers": ["10.0.0.9", "10.0.0.2"], "search": ["b.svc", "c.svc"],
                                        "resolv_options": ["ndots:5", "timeout:1", "attempts:2", "rotate"]}


def test_enricher_on_this_process():
    import os

    enricher = Enricher()
    events = enricher.enrich([{"kind": "gai", "pid": os.getpid(), "comm": ""},
                              {"kind": "conntrack", "pid": 0},
                              {"kind": "dns", "pid": 2 ** 22 + 7, "comm": "gone"}])
    assert events[0]["comm"] and "container" in events[0] and "nameservers" in events[0]
    assert events[1]["container"] == "" and events[2]["container"] == ""
    assert enricher.stats()["pid_unknown"] == 1
