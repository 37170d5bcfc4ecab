"""Helpers for collector tests and the collector benchmark: free ports, a collector subprocess, a throwaway ClickHouse."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from dnstrace.lab.netns import stop_process
from support import DNSTRACE, REPO  # noqa: F401  (re-exported for the collector tests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProcess:
    """``dnstrace collector`` as a subprocess; restartable on the same port and store."""

    def __init__(self, store_url: str, extra: list[str] | None = None, port: int | None = None,
                 host: str = "127.0.0.1"):
        self.store_url = store_url
        self.extra = extra or ["--insecure"]
        self.port = port or free_port()
        self.address = f"{host}:{self.port}"
        self.proc = None
        self.stderr = b""

    def start(self, timeout_s: float = 30.0) -> CollectorProcess:
        self.proc = subprocess.Popen(DNSTRACE + ["collector", "--listen", self.address, "--store", self.store_url]
                                     + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if b"collector listening" in line:
                return self
            if not line and self.proc.poll() is not None:
                break
        rest = self.proc.stderr.read() if self.proc.poll() is not None else b""
        self.stop()
        raise AssertionError(f"collector did not start: {line!r} {rest!r}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ClickHouseServer:
    """A real clickhouse-server on 127.0.0.1 with a config under a temp dir."""

    BINARY = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"

    def __init__(self, directory: Path, extra_config: str = ""):
        self.dir = directory
        self.port = free_port()
        self.http_port = free_port()
        self.extra_config = extra_config  # more elements inside <yandex> (cluster, ZooKeeper, macros)
        self.proc = None

    def start(self, timeout_s: float = 60.0) -> ClickHouseServer:
        d = self.dir
        for sub in ("data", "tmp", "user_files", "format_schemas"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "users.xml").write_text(
            "<yandex><profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>"
            "<users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"
            "<profile>default</profile><quota>default</quota></default></users>"
            "<quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>"
            "<result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>"
            "</interval></default></quotas></yandex>")
        (d / "config.xml").write_text(
            f"<yandex><logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog>"
            f"<console>0</console></logger><listen_host>127.0.0.1</listen_host><tcp_port>{self.port}</tcp_port>"
            f"<http_port>{self.http_port}</http_port><path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path>"
            f"<user_files_path>{d}/user_files/</user_files_path>"
            f"<format_schema_path>{d}/format_schemas/</format_schema_path><users_config>{d}/users.xml</users_config>"
            "<default_profile>default</default_profile><default_database>default</default_database>"
            f"<mark_cache_size>268435456</mark_cache_size>{self.extra_config}</yandex>")
        self.proc = subprocess.Popen([self.BINARY, f"--config-file={d}/config.xml"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=d)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"clickhouse-server exited: {(d / 'server.err.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("clickhouse-server did not start listening")

    @property
    def url(self) -> str:
        return self.url_for("dnstrace_test")

    def url_for(self, database: str, cluster: str = "") -> str:
        return (f"clickhouse://127.0.0.1:{self.port}/{database}?http_port={self.http_port}"
                + (f"&cluster={cluster}" if cluster else ""))

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, grace_s=20)


class ZooKeeperServer:
    """Debian's ZooKeeper 3.8, standalone on 127.0.0.1 with its data under a temp dir."""

    JAR = "/usr/share/java/zookeeper.jar"

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.proc = None

    def start(self, timeout_s: float = 60.0) -> ZooKeeperServer:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "zoo.cfg").write_text(
            f"tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={self.dir}/data\nclientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=ruok\n")
        log = open(self.dir / "zookeeper.log", "wb")
        self.proc = subprocess.Popen(["java", "-Xmx256m", "-cp", f"{self.dir}:{self.JAR}",
                                      "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.dir / "zoo.cfg")],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"zookeeper exited: {(self.dir / 'zookeeper.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"ruok")
                    if conn.recv(4) == b"imok":
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("zookeeper did not start")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, grace_s=20)


class ClickHouseCluster:
    """Two clickhouse-server processes as two shards of cluster ``name`` (ReplicatedMergeTree via one ZooKeeper)."""

    def __init__(self, directory: Path, name: str = "dnstrace_test", shards: int = 2):
        self.dir = directory
        self.name = name
        self.zookeeper = ZooKeeperServer(directory / "zookeeper")
        self.nodes = [ClickHouseServer(directory / f"node{n + 1}") for n in range(shards)]

    def start(self) -> ClickHouseCluster:
        self.zookeeper.start()
        shards = "".join(f"<shard><replica><host>127.0.0.1</host><port>{node.port}</port></replica></shard>"
                         for node in self.nodes)
        try:
            for n, node in enumerate(self.nodes):
                node.extra_config = (
                    f"<zookeeper><node><host>127.0.0.1</host><port>{self.zookeeper.port}</port></node></zookeeper>"
                    f"<remote_servers><{self.name}>{shards}</{self.name}></remote_servers>"
                    f"<macros><shard>{n + 1:02d}</shard><replica>node{n + 1}</replica></macros>"
                    f"<interserver_http_host>127.0.0.1</interserver_http_host>"
                    f"<interserver_http_port>{free_port()}</interserver_http_port>")
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def url_for(self, database: str, node: int = 0) -> str:
        return self.nodes[node].url_for(database, cluster=self.name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.zookeeper.stop()


def failed_by_definition(event: dict) -> bool:
    """The README's "failed", written out independently of dnstrace.wire.codec (whose
    ``events.is_failed`` is pinned to literal cases in tests/unit/wire/test_codec.py)."""
    return (event.get("error") is not None
            or event.get("rcode") not in (None, "NOERROR")
            or event.get("answered") is False
            or event.get("result") in ("refused", "timeout", "reset", "unreachable")
            or event.get("kind") == "drop")
