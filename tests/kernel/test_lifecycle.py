"""`dnstrace agent` on the real kernel: it attaches, serves health, refuses a second agent,
and after SIGTERM -- and after SIGKILL -- no program it loaded is left in the kernel:
not in `bpftool prog`, not on the cgroup v2 root (`bpftool cgroup tree`), not in tracefs.

The agent's programs are identified by the ``prog_id`` of the BPF fds it holds
(/proc/PID/fdinfo), read while it runs: bpftool's ``pids`` column needs a bpftool
built with BPF skeletons, which Debian's is not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from support import DNSTRACE

pytestmark = pytest.mark.kernel


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bpftool_json(*args) -> list:
    result = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip() or "[]")


def loaded_prog_ids() -> set[int]:
    return {prog["id"] for prog in bpftool_json("prog", "show")}


def cgroup_root() -> str:
    from dnstrace.kernel.load import find_cgroup2_root

    return find_cgroup2_root()


def cgroup_root_prog_ids() -> set[int]:
    """Programs attached directly to the cgroup v2 root (where dnstrace attaches)."""
    result = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup_root()],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {entry["id"] for entry in json.loads(result.stdout.strip() or "[]")}


def cgroup_tree_text() -> str:
    return subprocess.run(["bpftool", "cgroup", "tree", cgroup_root()], capture_output=True,
                          text=True, timeout=60).stdout


def tracefs_probe_lines(pid: int) -> list[str]:
    """uprobe/kprobe definitions bcc names after the pid that created them (``..._bcc_<pid>``)."""
    from dnstrace.kernel.load import tracefs_path

    lines = []
    for name in ("uprobe_events", "kprobe_events"):
        path = os.path.join(tracefs_path(mount=False), name)
        if os.path.exists(path):
            with open(path) as f:
                lines += [line for line in f if f"bcc_{pid}" in line]
    return lines


def held_prog_ids(pid: int) -> set[int]:
    """Program ids of the BPF program and link fds a process holds."""
    ids = set()
    fd_dir = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(fd_dir):
        try:
            with open(os.path.join(fd_dir, fd)) as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


class Agent:
    """A running ``dnstrace agent`` with its own lock, spool, store and health port."""

    def __init__(self, tmp_path, extra_args=()):
        self.health_port = free_port()
        self.lock_file = str(tmp_path / "agent.lock")
        self.argv = [
            "agent", "--lock-file", self.lock_file,
            "--health-addr", f"127.0.0.1:{self.health_port}",
            "--spool-dir", str(tmp_path / "spool"),
            "--embedded-store", f"duckdb:{tmp_path / 'agent.duckdb'}",
            "--embedded-listen", f"unix:{tmp_path / 'collector.sock'}",
            *extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DNSTRACE_")}
        env["DNSTRACE_CONFIG"] = os.devnull  # not the node's /etc/dnstrace
        self.proc = subprocess.Popen(DNSTRACE + self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=str(tmp_path))
        self.stderr: list[str] = []
        self.attached = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("dnstrace: attached"):
                self.attached.set()
        self.attached.set()

    def wait_attached(self, timeout_s=180):
        assert self.attached.wait(timeout_s), "agent never attached:\n" + "".join(self.stderr)
        assert self.proc.poll() is None, "agent exited:\n" + "".join(self.stderr)

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self, sig, timeout_s=60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("agent did not exit after " + sig.name + ":\n" + "".join(self.stderr)) from None


def wait_gone(prog_ids: set[int], timeout_s=10.0) -> set[int]:
    """Program ids still loaded after up to ``timeout_s`` (the kernel frees them asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = prog_ids & loaded_prog_ids()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def snapshot_attached(agent: Agent) -> dict:
    """What the running agent has in the kernel, to check for after it is gone."""
    pid = agent.proc.pid
    prog_ids = held_prog_ids(pid)
    assert prog_ids, "the agent holds no BPF program"
    assert prog_ids <= loaded_prog_ids()
    return {
        "pid": pid,
        "prog_ids": prog_ids,
        "cgroup_ids": prog_ids & cgroup_root_prog_ids(),
    }


def assert_nothing_left(state: dict) -> None:
    left = wait_gone(state["prog_ids"])
    assert not left, f"programs still loaded after the agent exited: {sorted(left)}"
    cgroup_left = state["prog_ids"] & cgroup_root_prog_ids()
    assert not cgroup_left, f"still attached to the cgroup root: {sorted(cgroup_left)}\n{cgroup_tree_text()}"
    assert not tracefs_probe_lines(state["pid"]), tracefs_probe_lines(state["pid"])


def test_sigterm_detaches_everything_and_health_and_single_instance(kernel, tmp_path):
    agent = Agent(tmp_path)
    try:
        agent.wait_attached()
        state = snapshot_attached(agent)
        log = "".join(agent.stderr)

        # Health: alive and ready once attached.
        status, body = agent.get("/healthz")
        assert status == 200 and body["alive"]
        status, body = agent.get("/readyz")
        assert status == 200 and body["ready"] and body["attached"]
        attached = body["attached"]
        if {"dns", "lookups"} & set(attached):  # DNS on the wire hangs off the cgroup v2 root
            assert state["cgroup_ids"], "dns is attached but nothing is on the cgroup root:\n" + log
        assert agent.get("/nope")[0] == 404

        # A second agent on the same node (same lock file) refuses, at once and clearly.
        second = subprocess.run(DNSTRACE + ["agent", "--lock-file", agent.lock_file, "--health-addr", ""],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, DNSTRACE_CONFIG=os.devnull))
        assert second.returncode == 1
        assert f"another dnstrace agent (pid {agent.proc.pid}) is already running" in second.stderr
        assert "Traceback" not in second.stderr

        assert agent.stop(signal.SIGTERM) == 0, "".join(agent.stderr)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
    assert_nothing_left(state)
    log = "".join(agent.stderr)
    assert "agent stopped: every probe detached" in log and "Traceback" not in log
    # The lock died with it: a new agent could start.
    import fcntl

    with open(agent.lock_file) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_sigkill_leaves_nothing_attached(kernel, tmp_path):
    agent = Agent(tmp_path)
    try:
        agent.wait_attached()
        state = snapshot_attached(agent)
        agent.stop(signal.SIGKILL)
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
    assert agent.proc.returncode == -signal.SIGKILL
    assert_nothing_left(state)
