"""Fixtures for collector tests: a collector subprocess, a throwaway ClickHouse, test certificates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector_helpers import ClickHouseCluster, ClickHouseServer, CollectorProcess, ZooKeeperServer  # noqa: E402

from support import require  # noqa: E402


@pytest.fixture
def collector_factory(tmp_path):
    started: list[CollectorProcess] = []

    def make(store_url: str | None = None, extra: list[str] | None = None, port: int | None = None,
             host: str = "127.0.0.1"):
        proc = CollectorProcess(store_url or f"duckdb:{tmp_path}/collector.duckdb", extra, port, host)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory):
    require(os.path.exists(ClickHouseServer.BINARY),
            f"ClickHouse test: {ClickHouseServer.BINARY} is not installed (scripts/dev setup installs it)")
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def clickhouse_cluster(tmp_path_factory):
    """Two shards (two clickhouse-server processes) and one ZooKeeper, all on loopback, stopped at the end."""
    if not os.path.exists(ClickHouseServer.BINARY):
        pytest.skip("clickhouse-server is not installed (scripts/dev setup installs it)")
    if not os.path.exists(ZooKeeperServer.JAR) or not shutil.which("java"):
        pytest.skip("Debian's zookeeper (and a java runtime) is not installed (scripts/dev setup installs it)")
    cluster = ClickHouseCluster(tmp_path_factory.mktemp("chcluster")).start()
    yield cluster
    cluster.stop()


def _run_openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A CA, a server cert for 127.0.0.1/localhost, a client cert it signed, and a client cert of another CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("certs")

    def ca(name):
        _run_openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                     "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"))

    def leaf(name, ca_name, server: bool):
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                       else "extendedKeyUsage=clientAuth\n")
        _run_openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
                     "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        _run_openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca_name}.pem"), "-CAkey",
                     str(d / f"{ca_name}.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                     "-out", str(d / f"{name}.pem"))

    ca("ca")
    ca("rogue-ca")
    leaf("server", "ca", True)
    leaf("client", "ca", False)
    leaf("rogue-client", "rogue-ca", False)
    return d
