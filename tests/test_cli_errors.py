"""Errors users hit get one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from support import DNSTRACE, REPO

UNPRIVILEGED_UID = 65534  # nobody


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user (the unprivileged case is the point)")
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is missing")
    # nobody must be able to import the package: run from the repo with it on PYTHONPATH.
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME="/")
    return subprocess.run(
        [setpriv, f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups",
         *DNSTRACE, *argv],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )


def _assert_importable(proc: subprocess.CompletedProcess) -> None:
    # Not a skip: a package uid nobody cannot import would hide the very case under test.
    assert "No module named" not in proc.stderr, \
        f"uid {UNPRIVILEGED_UID} cannot import the package (make the checkout world-readable): {proc.stderr}"


def _assert_clean_error(proc: subprocess.CompletedProcess, needle: str, exit_code: int) -> None:
    assert proc.returncode == exit_code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dnstrace: error:")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], errors[0]
    assert proc.stdout == ""


def test_trace_gai_as_non_root_says_root_is_needed():
    proc = _as_nobody(["trace", "gai"])
    _assert_importable(proc)
    _assert_clean_error(proc, "needs root", 3)


def test_doctor_as_non_root_reports_and_fails():
    proc = _as_nobody(["doctor"])
    _assert_importable(proc)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert any(line.startswith("[fail] privileges") for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize("argv,needle", [
    (["trace", "gai", "--min-latency", "soon"], "not a duration"),
    (["trace", "gai", "--duration=forever"], "not a duration"),
])
def test_bad_durations_give_one_line(argv, needle):
    proc = subprocess.run(DNSTRACE + argv, capture_output=True, text=True, timeout=60)
    _assert_clean_error(proc, needle, 2)


def test_bad_rescan_interval_is_a_usage_error():
    proc = subprocess.run(DNSTRACE + ["trace", "gai", "--libc-rescan-interval", "often"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "not a duration" in proc.stderr
