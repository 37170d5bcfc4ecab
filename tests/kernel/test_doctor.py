"""``dnstrace doctor --json`` against the real kernel: attach types probed for real, one verdict each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from support import DNSTRACE


def _bpftool_program_types() -> dict[str, bool] | None:
    """Ground truth independent of dnstrace: bpftool's own feature probe (None without bpftool)."""
    bpftool = shutil.which("bpftool") or shutil.which("bpftool", path="/usr/sbin:/sbin")
    if not bpftool:
        return None
    out = subprocess.run([bpftool, "-j", "feature", "probe", "kernel"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout).get("program_types")


def test_doctor_json_reports_attach_types(kernel):
    proc = subprocess.run(DNSTRACE + ["doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    for check in checks.values():
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("ok", "warn", "fail", "off")
        assert "\n" not in check["detail"]
    for required in ("tracepoint", "raw_tracepoint", "uprobe", "cgroup_skb"):
        assert checks[f"attach {required}"]["status"] == "ok", checks[f"attach {required}"]
    kprobe_possible = os.path.exists("/sys/bus/event_source/devices/kprobe")
    assert checks["attach kprobe"]["status"] == ("ok" if kprobe_possible else "off"), checks["attach kprobe"]
    types = _bpftool_program_types()
    if types is not None and not types.get("have_tracing_prog_type", True):
        assert checks["attach fentry"]["status"] == "off"
    assert checks["attach fentry"]["status"] in ("ok", "off")
    for name in ("privileges", "bcc", "bpf syscall", "tracefs", "kernel headers", "cgroup v2"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "glibc" in checks["libcs"]["detail"]
    # The agent can run here: exit 0 exactly when nothing failed.
    assert proc.returncode == (0 if all(c["status"] != "fail" for c in checks.values()) else 3)
    assert proc.returncode == 0
