"""One agent per node: an exclusive ``flock`` on ``agent.lock_file``, held while the agent runs.

Two agents on one node would attach every probe twice and ship every event twice,
so the second one refuses to start and names the first one's pid. The kernel drops
the lock when the holder dies, even on SIGKILL, so a stale file never blocks a
restart; the file itself is left in place on purpose (deleting it would let a
third agent lock a new inode while the second still holds the old one).
"""

from __future__ import annotations

import errno
import fcntl
import os

from dnstrace.errors import DnstraceError, EnvironmentProblem


class AgentAlreadyRunning(DnstraceError):
    """Another ``dnstrace agent`` holds the node's lock."""


class InstanceLock:
    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def acquire(self) -> InstanceLock:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise EnvironmentProblem(
                f"cannot open the agent lock file {self.path} (agent.lock_file): {err.strerror}",
                hint="run as root, or set agent.lock_file to a writable path",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_pid(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                who = f"pid {holder}" if holder else "another process"
                raise AgentAlreadyRunning(
                    f"another dnstrace agent ({who}) is already running on this node "
                    f"(it holds {self.path})",
                    hint="stop it first (systemctl stop dnstrace-agent); one agent per node. "
                         "'dnstrace top', 'trace' and 'findings' can run alongside it",
                ) from None
            raise EnvironmentProblem(f"cannot lock {self.path}: {err.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)  # closing the last fd drops the flock
            self.fd = -1

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
