"""`dnstrace doctor`'s store check: a store whose SQL the installed engine refuses is named, not hidden."""

from __future__ import annotations

from dnstrace.cli import doctor
from dnstrace.collector.query import rollup


def test_working_embedded_store_passes(tmp_path):
    check = doctor.check_store(f"duckdb:{tmp_path}/node.duckdb")
    assert check.status == doctor.OK
    assert check.name == "store duckdb"
    assert "write and read back work" in check.detail
    assert not (tmp_path / "node.duckdb").exists(), "the self-test must not touch the node's store file"


def test_store_with_sql_the_engine_refuses_is_named(tmp_path, monkeypatch):
    # The 2.0.1 break in miniature: the rollup insert becomes SQL that no DuckDB accepts.
    monkeypatch.setattr(rollup, "ingest_select", lambda *a, **k: "SELECT * FROM (incoming_group WHERE")
    check = doctor.check_store(f"duckdb:{tmp_path}/node.duckdb")
    assert check.status == doctor.FAIL
    assert check.name == "store duckdb"
    assert check.detail.startswith(f"duckdb:{tmp_path}/node.duckdb: ingest self-test failed: ")
    assert "\n" not in check.detail
