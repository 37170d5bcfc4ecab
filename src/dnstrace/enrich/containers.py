"""Who a process belongs to, from its cgroup path: container, Kubernetes pod, Nomad allocation, systemd unit.

``parse_cgroup(path)`` is pure (no file access) and understands the layouts the
container runtimes and orchestrators write:

* Kubernetes, systemd driver: ``/kubepods.slice/kubepods-burstable.slice/
  kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``
  (``crio-<id>.scope``, ``docker-<id>.scope`` for CRI-O and dockershim/cri-dockerd);
* Kubernetes, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>``;
* Docker and other runtimes outside Kubernetes: ``/system.slice/docker-<id>.scope``,
  ``/docker/<id>``, ``/system.slice/libpod-<id>.scope`` (podman), ``nerdctl-<id>.scope``;
* Nomad: ``/nomad.slice/<share|reserve>.slice/<alloc-uuid>.<task>.scope`` (cgroup v2)
  and ``/nomad/<alloc-uuid>-<task>`` (v1);
* systemd services: ``/system.slice/<name>.service``, user services under ``user@UID.service``.

``PodNames`` then looks up pod name and namespace on the node, when available, from
the runtime's OCI bundle annotations (containerd, CRI-O), Docker's container config
labels, or the kubelet's pod directory (``etc-hosts`` names the pod; the projected
service-account volume holds a ``namespace`` file). Results are cached, bounded.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from dnstrace.bounded import BoundedDict

_HEX_ID = r"[0-9a-f]{64}"
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"

# "<runtime>-<64 hex>.scope" (systemd cgroup driver) -> runtime name used in the container id.
_SCOPE_RE = re.compile(rf"^(?P<prefix>cri-containerd|crio|docker|libpod|nerdctl|containerd)-(?P<id>{_HEX_ID})\.scope$")
_CONMON_RE = re.compile(rf"^crio-conmon-(?P<id>{_HEX_ID})\.scope$")
_BARE_ID_RE = re.compile(rf"^(?P<id>{_HEX_ID})$")
_POD_SLICE_RE = re.compile(rf"^kubepods(?:-[a-z]+)?-pod(?P<uid>{_UUID})\.slice$")
_POD_DIR_RE = re.compile(rf"^pod(?P<uid>{_UUID})$")
_NOMAD_V2_RE = re.compile(rf"^(?P<alloc>{_UUID})\.(?P<task>.+)\.scope$")
_NOMAD_V1_RE = re.compile(rf"^(?P<alloc>{_UUID})-(?P<task>.+)$")
_RUNTIME_NAMES = {
    "cri-containerd": "containerd", "containerd": "containerd", "crio": "cri-o",
    "docker": "docker", "libpod": "podman", "nerdctl": "containerd",
}


@dataclass(frozen=True)
class Attribution:
    """Who owns a process. Empty strings for what does not apply (host processes: all empty)."""

    runtime: str = ""  # docker, containerd, cri-o, podman, nomad, systemd
    container_id: str = ""  # full 64-hex id, or "<alloc>/<task>" for Nomad exec drivers
    container: str = ""  # what to show: a name when known, else the short id
    pod_uid: str = ""
    pod: str = ""  # pod name (Kubernetes) or Nomad allocation id
    namespace: str = ""  # Kubernetes namespace (or Nomad namespace when known)
    service: str = ""  # systemd unit of a host process, e.g. "kafka.service"

    @property
    def is_host(self) -> bool:
        return not self.container_id and not self.pod_uid

    def fields(self) -> dict:
        """The event fields this attribution fills."""
        return {"container": self.container, "pod": self.pod, "namespace": self.namespace}


HOST = Attribution()


def short_id(container_id: str) -> str:
    return container_id[:12]


def parse_cgroup(path: str | None) -> Attribution:
    """Attribution from a cgroup path alone (pod names need ``PodNames``)."""
    if not path:
        return HOST
    parts = [p for p in path.split("/") if p and p != ".."]
    runtime = container_id = pod_uid = service = ""
    nomad_alloc = nomad_task = ""
    under_kubepods = under_nomad = False
    for i, part in enumerate(parts):
        if part.startswith("kubepods"):
            under_kubepods = True
        if part.startswith("nomad"):
            under_nomad = True
        m = _POD_SLICE_RE.match(part) or (_POD_DIR_RE.match(part) if under_kubepods else None)
        if m:
            pod_uid = m.group("uid").replace("_", "-")
            continue
        m = _SCOPE_RE.match(part)
        if m:
            runtime, container_id = _RUNTIME_NAMES[m.group("prefix")], m.group("id")
            continue
        m = _CONMON_RE.match(part)
        if m:  # CRI-O's monitor process: attribute it to the container it watches
            runtime, container_id = "cri-o", m.group("id")
            continue
        m = _BARE_ID_RE.match(part)
        if m and i > 0 and (under_kubepods or parts[i - 1] in ("docker", "containerd", "crio", "libpod")):
            container_id = m.group("id")
            if not runtime:
                runtime = {"crio": "cri-o", "libpod": "podman"}.get(parts[i - 1], parts[i - 1])
            continue
        if under_nomad:
            m = _NOMAD_V2_RE.match(part) or _NOMAD_V1_RE.match(part)
            if m:
                nomad_alloc, nomad_task = m.group("alloc"), m.group("task")
                continue
        if part.endswith(".service") and not container_id:
            # the innermost service wins (user@1000.service/app.slice/foo.service -> foo.service)
            service = part
    if pod_uid and not runtime:
        runtime = "kubernetes"
    if container_id:
        return Attribution(runtime=runtime or "container", container_id=container_id,
                           container=short_id(container_id), pod_uid=pod_uid)
    if nomad_alloc:
        return Attribution(runtime="nomad", container_id=f"{nomad_alloc}/{nomad_task}", container=nomad_task,
                           pod=nomad_alloc)
    if pod_uid:  # a pod-level process (pause/sandbox) without a container scope
        return Attribution(runtime=runtime, pod_uid=pod_uid)
    if service:
        return Attribution(runtime="systemd", service=service)
    return HOST


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > 4 * 1024 * 1024:  # not a config file we know
                return None
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _read_text(path: Path, limit: int = 65536) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


class PodNames:
    """Fills pod name, namespace and container name from what the node's runtimes keep on disk.

    ``root`` lets tests point at a fake filesystem. Every lookup is cached (bounded LRU)
    by container id / pod uid, including misses, so a busy node reads each file once.
    """

    OCI_BUNDLE_DIRS = (
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json",
        "run/containerd/io.containerd.runtime.v2.task/moby/{id}/config.json",
        "run/containerd/io.containerd.runtime.v2.task/default/{id}/config.json",
        "run/containers/storage/overlay-containers/{id}/userdata/config.json",
        "var/lib/containers/storage/overlay-containers/{id}/userdata/config.json",
    )
    DOCKER_CONFIG = "var/lib/docker/containers/{id}/config.v2.json"
    KUBELET_PODS = "var/lib/kubelet/pods/{uid}"

    def __init__(self, root: str = "/", max_entries: int = 4096):
        self.root = Path(root)
        self.max_entries = max_entries
        self._cache: BoundedDict = BoundedDict(max_entries)  # container id or pod uid -> Attribution
        self.lookups = 0

    @property
    def evictions(self) -> int:
        return self._cache.evicted

    def complete(self, attribution: Attribution) -> Attribution:
        if attribution.is_host or attribution.runtime == "nomad":
            return attribution
        key = attribution.container_id or attribution.pod_uid
        cached = self._cache.touch(key)
        if cached is not None:
            return cached
        self.lookups += 1
        result = self._lookup(attribution)
        self._cache.put(key, result)
        return result

    def _lookup(self, att: Attribution) -> Attribution:
        name = pod = namespace = ""
        pod_uid = att.pod_uid
        if att.container_id:
            for pattern in self.OCI_BUNDLE_DIRS:
                config = _read_json(self.root / pattern.format(id=att.container_id))
                if config is not None:
                    notes = config.get("annotations") or {}
                    pod = notes.get("io.kubernetes.cri.sandbox-name") or notes.get("io.kubernetes.pod.name") or ""
                    namespace = (notes.get("io.kubernetes.cri.sandbox-namespace")
                                 or notes.get("io.kubernetes.pod.namespace") or "")
                    name = notes.get("io.kubernetes.cri.container-name") or notes.get(
                        "io.kubernetes.container.name") or ""
                    pod_uid = pod_uid or notes.get("io.kubernetes.cri.sandbox-uid") or notes.get(
                        "io.kubernetes.pod.uid") or ""
                    break
            else:
                config = _read_json(self.root / self.DOCKER_CONFIG.format(id=att.container_id))
                if config is not None:
                    labels = (config.get("Config") or {}).get("Labels") or {}
                    pod = labels.get("io.kubernetes.pod.name", "")
                    namespace = labels.get("io.kubernetes.pod.namespace", "")
                    name = labels.get("io.kubernetes.container.name") or str(config.get("Name") or "").lstrip("/")
        if pod_uid and not (pod and namespace):
            kube_pod, kube_ns = self._from_kubelet(pod_uid)
            pod, namespace = pod or kube_pod, namespace or kube_ns
        return replace(att, container=name or att.container, pod=pod or att.pod,
                       namespace=namespace or att.namespace, pod_uid=pod_uid)

    def _from_kubelet(self, pod_uid: str) -> tuple[str, str]:
        pod_dir = self.root / self.KUBELET_PODS.format(uid=pod_uid)
        pod = namespace = ""
        hosts = _read_text(pod_dir / "etc-hosts")
        if hosts:
            # kubelet writes "<pod IP>\t<pod hostname>" (hostname = pod name unless spec.hostname is set)
            for line in hosts.splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1] not in ("localhost", "ip6-localhost", "ip6-loopback") \
                        and not fields[0].startswith(("127.", "::1", "fe00", "fe02", "ff0")):
                    pod = fields[1].split(".")[0]
                    break
        projected = pod_dir / "volumes" / "kubernetes.io~projected"
        try:
            volumes = sorted(os.listdir(projected))
        except OSError:
            volumes = []
        for volume in volumes:
            text = _read_text(projected / volume / "namespace", 256)
            if text and text.strip():
                namespace = text.strip()
                break
        return pod, namespace


class ContainerResolver:
    """cgroup path -> complete Attribution, cached by path (bounded)."""

    def __init__(self, root: str = "/", max_entries: int = 8192):
        self.pod_names = PodNames(root, max_entries=max_entries // 2)
        self.max_entries = max_entries
        self._cache: BoundedDict = BoundedDict(max_entries)  # cgroup path -> Attribution

    @property
    def evictions(self) -> int:
        return self._cache.evicted

    def resolve(self, cgroup_path: str | None) -> Attribution:
        if not cgroup_path:
            return HOST
        cached = self._cache.touch(cgroup_path)
        if cached is not None:
            return cached
        attribution = self.pod_names.complete(parse_cgroup(cgroup_path))
        self._cache.put(cgroup_path, attribution)
        return attribution

    def stats(self) -> dict:
        return {"cgroup_cache": len(self._cache), "cgroup_evictions": self.evictions,
                "pod_lookups": self.pod_names.lookups, "pod_evictions": self.pod_names.evictions}
