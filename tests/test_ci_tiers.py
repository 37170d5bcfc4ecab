"""CI cannot go green without its test tiers: a missing prerequisite fails under CI, skips elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support import REPO, require, under_ci

KERNEL_TEST = "tests/kernel/test_doctor.py::test_doctor_json_reports_attach_types"


@pytest.mark.parametrize("value,expected", [
    ("true", True), ("1", True), ("yes", True), ("", False), ("0", False), ("false", False), ("No", False),
])
def test_under_ci_reads_the_ci_variable(monkeypatch, value, expected):
    monkeypatch.setenv("CI", value)
    assert under_ci() is expected


def test_under_ci_is_off_without_the_variable(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert under_ci() is False


def test_require_passes_when_the_prerequisite_is_there(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require(True, "never shown") is None


def test_require_skips_on_a_developer_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="^no clickhouse-server$"):
        require(False, "no clickhouse-server")


def test_require_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match="^CI is set, so this test tier must run, but a prerequisite is missing: "
                             "no clickhouse-server$"):
        require(False, "no clickhouse-server")


def _kernel_test_without_bcc(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    """Run one real kernel test in a fresh pytest with bcc hidden from the module path."""
    (tmp_path / "bcc.py").write_text('raise ImportError("No module named \'bcc\' (hidden by the test)")\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(tmp_path)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", KERNEL_TEST],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_kernel_tier_without_bcc_fails_under_ci_and_says_why(tmp_path):
    proc = _kernel_test_without_bcc(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    # As root the first missing prerequisite is the hidden bcc; elsewhere it is root itself.
    why = "bcc is not importable" if os.geteuid() == 0 else "needs root"
    assert f"CI is set, so this test tier must run, but a prerequisite is missing: kernel test: {why}" \
        in proc.stdout, proc.stdout
    assert "1 error" in proc.stdout.splitlines()[-1]


def test_kernel_tier_without_bcc_skips_on_a_developer_machine(tmp_path):
    proc = _kernel_test_without_bcc(tmp_path, None)
    assert proc.returncode == 0, proc.stdout
    last = proc.stdout.splitlines()[-1]
    assert "1 skipped" in last and "error" not in last, proc.stdout
