"""``dnstrace doctor [--json]``: can this node run the agent, and what to fix if not.

One check per line, each with a status (ok, warn, fail, off), what was found and,
where there is one, the fix. Kernel features are probed for real: a tiny program
of each attach type the agent uses is loaded and attached, then detached. Exit 0
when the agent can run (no check failed), non-zero otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import struct
import sys
from dataclasses import asdict, dataclass

from dnstrace.errors import EXIT_ENVIRONMENT, DnstraceError

OK, WARN, FAIL, OFF = "ok", "warn", "fail", "off"

# Attach types: (name, required by the agent, what uses it).
REQUIRED_ATTACH = ("tracepoint", "raw_tracepoint", "uprobe", "cgroup_skb")
OPTIONAL_ATTACH = ("kprobe", "fentry")

PROBE_TEXT = r"""
#include <uapi/linux/ptrace.h>
static __u64 (*dt_get_attach_cookie)(void *ctx) = (void *)BPF_FUNC_get_attach_cookie;
int dt_tracepoint(void *ctx) { return 0; }
int dt_raw_tracepoint(void *ctx) { return 0; }
int dt_uprobe(struct pt_regs *ctx) { return dt_get_attach_cookie(ctx) == 42 ? 0 : 1; }
int dt_kprobe(struct pt_regs *ctx) { return 0; }
int dt_cgroup_skb(struct __sk_buff *skb) { return 1; }
"""
FENTRY_TEXT = r"""
KFUNC_PROBE(do_nanosleep) { return 0; }
"""


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


def _is_privileged() -> tuple[bool, str]:
    from dnstrace.kernel.load import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, effective_capabilities

    if os.geteuid() == 0:
        return True, "running as root"
    caps = effective_capabilities()
    if caps & (1 << CAP_SYS_ADMIN):
        return True, f"uid {os.geteuid()} with CAP_SYS_ADMIN"
    if caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON):
        return True, f"uid {os.geteuid()} with CAP_BPF and CAP_PERFMON"
    return False, f"uid {os.geteuid()} without CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN)"


def check_privileges() -> Check:
    ok, detail = _is_privileged()
    return Check("privileges", OK if ok else FAIL, detail,
                 None if ok else "run as root (sudo dnstrace ...) or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN")


def check_bpf_syscall() -> Check:
    """Create (and close) a one-element array map with the raw bpf() syscall."""
    numbers = {"x86_64": 321, "aarch64": 280}
    machine = platform.machine()
    if machine not in numbers:
        return Check("bpf syscall", WARN, f"not probed on {machine}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr = ctypes.create_string_buffer(struct.pack("<IIIII", 2, 4, 4, 1, 0), 72)  # BPF_MAP_TYPE_ARRAY
    fd = libc.syscall(numbers[machine], 0, attr, 72)  # BPF_MAP_CREATE
    if fd < 0:
        err = ctypes.get_errno()
        fix = "run as root" if err == 1 else "check kernel.unprivileged_bpf_disabled, seccomp and CONFIG_BPF_SYSCALL"
        return Check("bpf syscall", FAIL, f"bpf(BPF_MAP_CREATE) failed: {os.strerror(err)}", fix)
    os.close(fd)
    return Check("bpf syscall", OK, "bpf(BPF_MAP_CREATE) works")


def check_bcc() -> tuple[Check, object | None]:
    try:
        import bcc  # noqa: PLC0415
    except ImportError as err:
        return Check("bcc", FAIL, f"the bcc Python module is not importable ({err})",
                     "apt-get install python3-bpfcc; use a venv made with --system-site-packages"), None
    version = getattr(bcc, "__version__", "unknown version")
    return Check("bcc", OK, f"bcc {version} ({os.path.dirname(bcc.__file__)})"), bcc


def check_tracefs(privileged: bool) -> Check:
    from dnstrace.kernel.load import TRACEFS_CANDIDATES, tracefs_path

    with open("/proc/self/mounts") as mounts:
        mounted = [f.split()[1] for f in mounts if len(f.split()) > 2 and f.split()[2] == "tracefs"]
    if mounted and not privileged:
        return Check("tracefs", OK, f"mounted at {mounted[0]}")
    if not mounted and not privileged:
        return Check("tracefs", FAIL, "tracefs is not mounted (and mounting needs root)",
                     f"mount -t tracefs tracefs {TRACEFS_CANDIDATES[0]}")
    try:
        path = tracefs_path(mount=privileged)
    except DnstraceError as err:
        return Check("tracefs", FAIL, err.message, "mount -t tracefs tracefs /sys/kernel/tracing")
    return Check("tracefs", OK, f"mounted at {path}")


def check_btf() -> Check:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return Check("btf", OK, "/sys/kernel/btf/vmlinux present")
    return Check("btf", WARN, "no /sys/kernel/btf/vmlinux (not needed by dnstrace; fentry needs it)",
                 "a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def check_headers() -> Check:
    from dnstrace.kernel.load import kernel_headers

    state, detail = kernel_headers()
    if state == "matching":
        return Check("kernel headers", OK, f"matching: {detail}")
    if state == "fallback":
        return Check("kernel headers", OK,
                     f"fallback in use: {detail}; safe for dnstrace, whose BPF code reads no kernel struct",
                     f"apt-get install linux-headers-{platform.release()} if your distribution has it")
    return Check("kernel headers", FAIL, f"missing: {detail}",
                 f"apt-get install linux-headers-{platform.release()}, or link another version's headers "
                 f"(e.g. linux-headers-amd64) as /lib/modules/{platform.release()}/build (scripts/dev setup does)")


def check_cgroup2() -> tuple[Check, str | None]:
    from dnstrace.kernel.load import find_cgroup2_root

    try:
        root = find_cgroup2_root()
    except DnstraceError as err:
        return Check("cgroup v2", FAIL, err.message, err.hint), None
    return Check("cgroup v2", OK, f"mounted at {root}"), root


def check_conntrack() -> Check:
    path = "/proc/net/stat/nf_conntrack"
    try:
        with open(path) as f:
            f.readline()
    except OSError as err:
        return Check("conntrack stats", WARN, f"{path} not readable ({err.strerror}); conntrack signal off",
                     "modprobe nf_conntrack (only needed where NAT/conntrack is in use)")
    return Check("conntrack stats", OK, f"{path} readable")


def check_libcs() -> Check:
    from dnstrace.signals.gai.libcs import scan, symbol_offsets

    try:
        result = scan()
    except OSError as err:
        return Check("libcs", FAIL, f"cannot scan /proc: {err}")
    if not result.libcs:
        return Check("libcs", WARN, f"no glibc or musl mapped by any of {result.processes} processes",
                     "static binaries and Go's resolver bypass libc: the dns signal still sees them")
    parts, unprobeable = [], 0
    for libc in result.libcs.values():
        try:
            found = "getaddrinfo" in symbol_offsets(libc.attach_path, ("getaddrinfo",))
        except (OSError, ValueError):
            found = False
        unprobeable += not found
        parts.append(f"{libc.flavour} {libc.attach_path}" + ("" if found else " (no getaddrinfo: skipped)"))
    status = OK if unprobeable < len(parts) else WARN
    return Check("libcs", status, f"{len(parts)} distinct: " + "; ".join(parts))


def check_attach_types(bcc, cgroup_root: str | None) -> list[Check]:
    """Really load and attach one tiny program per attach type, then detach."""
    from dnstrace.kernel import load as bpfload
    from dnstrace.kernel.uprobe import UprobeLink
    from dnstrace.signals.gai.libcs import symbol_offsets

    results: dict[str, tuple[bool, str]] = {}
    try:
        bpf = bcc.BPF(text=PROBE_TEXT)
    except Exception as err:  # compile failure: every attach type is unknown
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        return [Check(f"attach {name}", FAIL if name in REQUIRED_ATTACH else OFF,
                      f"probe program did not compile: {reason}") for name in REQUIRED_ATTACH + OPTIONAL_ATTACH]
    try:
        try:
            bpf.attach_tracepoint(tp=b"sched:sched_process_exec", fn_name=b"dt_tracepoint")
            bpf.detach_tracepoint(tp=b"sched:sched_process_exec")
            results["tracepoint"] = (True, "loaded and attached (sched:sched_process_exec)")
        except Exception as err:
            results["tracepoint"] = (False, str(err))
        try:
            bpf.attach_raw_tracepoint(tp=b"sched_process_exec", fn_name=b"dt_raw_tracepoint")
            bpf.detach_raw_tracepoint(tp=b"sched_process_exec")
            results["raw_tracepoint"] = (True, "loaded and attached (sched_process_exec)")
        except Exception as err:
            results["raw_tracepoint"] = (False, str(err))
        try:
            import ctypes.util as cu
            libc_path = _own_libc_path() or cu.find_library("c")
            if libc_path is None:
                raise FileNotFoundError("no libc found in this process's maps or by ctypes")
            offset = symbol_offsets(libc_path, ("getaddrinfo",))["getaddrinfo"]
            prog = bpf.load_func(b"dt_uprobe", bcc.BPF.KPROBE)
            for retprobe in (False, True):
                UprobeLink(prog.fd, libc_path, offset, retprobe, cookie=42).close()
            results["uprobe"] = (True, f"uprobe+uretprobe with BPF cookie on getaddrinfo in {libc_path}")
        except Exception as err:
            results["uprobe"] = (False, str(err))
        try:
            if not cgroup_root:
                raise OSError("no cgroup v2 mount")
            prog = bpf.load_func(b"dt_cgroup_skb", bcc.BPF.CGROUP_SKB)
            bpfload.CgroupLink(prog.fd, cgroup_root, bpfload.BPF_CGROUP_INET_EGRESS).close()
            results["cgroup_skb"] = (True, f"loaded and linked to {cgroup_root}")
        except Exception as err:
            results["cgroup_skb"] = (False, getattr(err, "message", str(err)))
        try:
            event = bpf.get_syscall_fnname(b"getpid")
            with _quiet_stderr():
                bpf.attach_kprobe(event=event, fn_name=b"dt_kprobe")
            bpf.detach_kprobe(event=event)
            results["kprobe"] = (True, f"loaded and attached ({event.decode()})")
        except Exception as err:
            if not os.path.exists("/sys/bus/event_source/devices/kprobe"):
                results["kprobe"] = (False, "no kprobe PMU: kernel built without CONFIG_KPROBES")
            else:
                results["kprobe"] = (False, str(err))
    finally:
        bpf.cleanup()
    results["fentry"] = _probe_fentry(bcc)
    checks = []
    for name in REQUIRED_ATTACH:
        ok, detail = results[name]
        checks.append(Check(f"attach {name}", OK if ok else FAIL, _one_line(detail),
                            None if ok else "dnstrace needs this attach type; see README, Requirements"))
    for name in OPTIONAL_ATTACH:
        ok, detail = results[name]
        checks.append(Check(f"attach {name}", OK if ok else OFF,
                            _one_line(detail) if ok else f"optional, not available: {_one_line(detail)}"))
    return checks


def _probe_fentry(bcc) -> tuple[bool, str]:
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return False, "no kernel BTF"
    try:
        with _quiet_stderr():
            bpf = bcc.BPF(text=FENTRY_TEXT)
        bpf.cleanup()
        return True, "fentry program loaded and attached (do_nanosleep)"
    except Exception as err:
        detail = _one_line(str(err))
        if "super-user" in detail and os.geteuid() == 0:
            # bcc words every load refusal this way; as root it means the kernel said no.
            detail = "the kernel refused a BPF_PROG_TYPE_TRACING program even as root"
        return False, f"program type tracing (fentry) not loadable or attachable: {detail}"


class _quiet_stderr:
    """bcc and libbpf print their own complaints on fd 2: keep doctor's output one line per check."""

    def __enter__(self):
        sys.stderr.flush()
        self.devnull = os.open(os.devnull, os.O_WRONLY)
        self.saved = os.dup(2)
        os.dup2(self.devnull, 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.devnull)


def _own_libc_path() -> str | None:
    from dnstrace.signals.gai.libcs import libc_flavour

    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and libc_flavour(fields[5].strip()):
                return fields[5].strip()
    return None


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_store(url: str) -> Check:
    """Can the store the agent (embedded) or collector writes to work with the installed engine?"""
    from dnstrace.collector.store.from_url import self_test  # noqa: PLC0415

    name = "store " + url.split(":", 1)[0]
    try:
        what = self_test(url)
    except Exception as err:
        return Check(name, FAIL, f"{url}: ingest self-test failed: {type(err).__name__}: {_one_line(err)}",
                     "install the locked versions (scripts/dev setup) or report the engine version")
    try:
        import duckdb  # noqa: PLC0415

        engine = f"duckdb {duckdb.__version__}" if url.startswith("duckdb:") else ""
    except ImportError:
        engine = ""
    return Check(name, OK, f"{url}: write and read back work ({engine or what})")


def run_checks(store_url: str | None = None) -> list[Check]:
    checks = [check_privileges()]
    privileged = checks[0].status == OK
    bcc_check, bcc = check_bcc()
    checks += [bcc_check, check_bpf_syscall(), check_tracefs(privileged), check_btf(), check_headers()]
    cgroup_check, cgroup_root = check_cgroup2()
    checks += [cgroup_check, check_conntrack(), check_libcs()]
    can_probe = privileged and bcc is not None and checks[5].status != FAIL
    if can_probe:
        checks += check_attach_types(bcc, cgroup_root)
    else:
        why = "not probed: needs " + ", ".join(
            n for n, missing in (("root", not privileged), ("bcc", bcc is None),
                                 ("kernel headers", checks[5].status == FAIL)) if missing)
        checks += [Check(f"attach {name}", FAIL if name in REQUIRED_ATTACH else OFF, why)
                   for name in REQUIRED_ATTACH + OPTIONAL_ATTACH]
    if store_url:
        checks.append(check_store(store_url))
    return checks


def print_text(checks: list[Check], out=sys.stdout) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        line = f"[{c.status:^4}] {c.name:<{width}}  {c.detail}"
        if c.fix and c.status != OK:
            line += f"  -> fix: {c.fix}"
        print(line, file=out)


def run(args) -> int:
    from dnstrace import config as config_mod  # noqa: PLC0415

    config = config_mod.load(args.config)
    # The embedded store is the one this node writes to unless the agent ships to a remote collector.
    checks = run_checks(None if config["agent.collector"] else config["agent.embedded_store"])
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=None))
    else:
        print_text(checks)
    can_run = not any(c.status == FAIL for c in checks)
    if not args.json:
        print("dnstrace can run on this node" if can_run else "dnstrace cannot run here: fix the failed checks",
              file=sys.stderr)
    return 0 if can_run else EXIT_ENVIRONMENT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check that this node can run the agent, and say how to fix what is missing",
        description="Check privileges, bcc, bpf(), tracefs, BTF, kernel headers, every attach type "
                    "(loaded for real), cgroup v2, conntrack stats, the libcs on this node, and that the "
                    "embedded store (agent.embedded_store) can ingest and read back with the installed engine.",
    )
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="TOML config file whose agent.embedded_store / agent.collector are checked")
    parser.add_argument("--json", action="store_true", help="a JSON list of {name, status, detail, fix}")
    parser.set_defaults(func=run)
