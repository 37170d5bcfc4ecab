"""Every documented exit code, and the promise that errors are one line (README "Commands").

0 ok, 1 a failure at run time (or an unexpected error), 2 bad usage or config,
3 the node cannot run it (not root, no bcc, no kernel headers, no tracefs).
The node-side conditions are simulated in-process (the checks read the euid, the
import system, the kernel release and the tracefs candidates), so they run — and
must pass — on any machine, root or not, without touching the node.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dnstrace.cli import main as cli
from dnstrace.kernel import load as bpfload
from support import DNSTRACE


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dnstrace: error:")]


def assert_one_line(stderr: str, needle: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    assert needle in errors[0], errors[0]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- 2: usage -------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["trace", "gai", "--min-latency", "soon"], "not a duration"),
    (["trace", "gai", "--duration=forever"], "not a duration"),
])
def test_bad_flag_values_exit_2_with_one_line(argv, needle):
    proc = subprocess.run(DNSTRACE + argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert_one_line(proc.stderr, needle)
    assert proc.stdout == ""


def test_unknown_subcommand_is_argparse_usage_exit_2():
    proc = subprocess.run(DNSTRACE + ["no-such-command"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "invalid choice: 'no-such-command'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_subcommand_prints_help_and_exits_2(capsys):
    code, out, err = run_main([], capsys)
    assert code == 2
    assert err.startswith("usage: dnstrace")
    assert out == ""


# --- 3: the node cannot run it -------------------------------------------------

@pytest.fixture
def unprivileged(monkeypatch):
    monkeypatch.setattr(bpfload.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bpfload, "effective_capabilities", lambda: 0)


@pytest.fixture
def privileged(monkeypatch):
    monkeypatch.setattr(bpfload.os, "geteuid", lambda: 0)


def test_not_root_exits_3(unprivileged, capsys):
    code, out, err = run_main(["trace", "gai", "--duration", "1s"], capsys)
    assert code == 3
    assert_one_line(err, "needs root (or CAP_BPF and CAP_PERFMON)")
    assert "dnstrace: hint: run it with sudo" in err
    assert out == ""


def test_cap_bpf_and_perfmon_without_root_pass_the_privilege_check(monkeypatch):
    monkeypatch.setattr(bpfload.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bpfload, "effective_capabilities", lambda: (1 << 39) | (1 << 38))
    bpfload.require_privileges()
    monkeypatch.setattr(bpfload, "effective_capabilities", lambda: 1 << 39)  # CAP_BPF alone is not enough
    with pytest.raises(bpfload.EnvironmentProblem):
        bpfload.require_privileges()


def test_no_bcc_exits_3(privileged, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bcc", None)  # "import bcc" now raises ImportError
    code, out, err = run_main(["trace", "gai", "--duration", "1s"], capsys)
    assert code == 3
    assert_one_line(err, "the bcc Python module is not importable")
    assert "python3-bpfcc" in err


def test_no_kernel_headers_exit_3(privileged, monkeypatch, capsys):
    monkeypatch.setattr(bpfload, "import_bcc", lambda: object())
    monkeypatch.setattr(bpfload.platform, "release", lambda: "0.0.0-dnstrace-test")
    code, out, err = run_main(["trace", "gai", "--duration", "1s"], capsys)
    assert code == 3
    assert_one_line(err, "kernel headers for 0.0.0-dnstrace-test are missing "
                         "(no /lib/modules/0.0.0-dnstrace-test/build)")


def test_no_tracefs_exits_3(privileged, monkeypatch, capsys):
    monkeypatch.setattr(bpfload, "import_bcc", lambda: object())
    monkeypatch.setattr(bpfload, "require_kernel_headers", lambda: None)
    # /proc refuses new directories, so the mount point cannot even be created.
    monkeypatch.setattr(bpfload, "TRACEFS_CANDIDATES", ("/proc/dnstrace-test/tracing",))
    code, out, err = run_main(["trace", "gai", "--duration", "1s"], capsys)
    assert code == 3
    assert_one_line(err, "tracefs is not mounted and /proc/dnstrace-test/tracing cannot be created")
    assert "mount -t tracefs" in err


def test_hidden_bcc_in_a_fresh_process_exits_3(tmp_path):
    """End to end in a new interpreter: bcc shadowed on the module path, euid faked to root."""
    (tmp_path / "bcc.py").write_text('raise ImportError("No module named \'bcc\' (hidden by the test)")\n')
    script = textwrap.dedent("""
        import os, sys
        os.geteuid = lambda: 0
        from dnstrace.cli.main import main
        sys.exit(main(["trace", "gai", "--duration", "1s"]))
    """)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 3, proc.stderr
    assert_one_line(proc.stderr, "the bcc Python module is not importable (No module named 'bcc' (hidden by the test))")


# --- 1: failure at run time, and the unexpected ------------------------------

def test_runtime_error_exits_1(tmp_path):
    """A collector that is not there is a run-time failure (1), not a usage error."""
    sock = tmp_path / "absent.sock"
    proc = subprocess.run(DNSTRACE + ["query", "--collector", f"unix:{sock}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert_one_line(proc.stderr, f"dnstrace: error: collector unix:{sock} is unreachable")
    assert proc.stdout == ""


UNEXPECTED = textwrap.dedent("""
    import sys
    from dnstrace.cli import findings as findings_cmd
    def broken(args):
        raise RuntimeError("pid 4242 vanished\\nsecond line never shown")
    findings_cmd.run = broken
    from dnstrace.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_unexpected_exception_is_one_line_and_exit_1():
    proc = subprocess.run([sys.executable, "-c", UNEXPECTED, "findings", "--duration", "1s"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "dnstrace: error: unexpected RuntimeError: pid 4242 vanished in 'findings'",
        "dnstrace: hint: run again with --debug for the traceback, and report it",
    ]


def test_unexpected_exception_with_debug_adds_the_traceback():
    proc = subprocess.run([sys.executable, "-c", UNEXPECTED, "--debug", "findings", "--duration", "1s"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "dnstrace: error: unexpected RuntimeError: pid 4242 vanished in 'findings'"
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "second line never shown"
