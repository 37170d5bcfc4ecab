"""packaging/: every command line, flag, DNSTRACE_* variable and config file in the units,
manifests, jobs and container files exists in the CLI and the config schema; the systemd
units pass ``systemd-analyze verify``; probes point at the health endpoint that exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnstrace import config as config_mod
from dnstrace.cli.main import build_parser
from dnstrace.pipeline.health import split_host_port

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
UNITS = sorted((PACKAGING / "systemd").glob("*.service"))
K8S = sorted((PACKAGING / "kubernetes").glob("*.yaml"))
NOMAD = sorted((PACKAGING / "nomad").glob("*.hcl"))
CONTAINERFILES = sorted((PACKAGING / "container").glob("Containerfile.*"))
ALL_FILES = UNITS + K8S + NOMAD + CONTAINERFILES + [PACKAGING / "dnstrace.toml"]
BINARY = "/usr/local/bin/dnstrace"
HEALTH_PATHS = {"/healthz", "/readyz"}
NON_KEY_VARIABLES = {"DNSTRACE_CONFIG"}


def test_packaging_is_complete():
    assert {u.name for u in UNITS} == {"dnstrace-agent.service", "dnstrace-collector.service"}
    kinds = {doc["kind"] for f in K8S for doc in yaml.safe_load_all(f.read_text()) if doc}
    assert {"DaemonSet", "Deployment", "Service", "ConfigMap"} <= kinds
    assert any(re.search(r'type\s*=\s*"system"', f.read_text()) for f in NOMAD)
    assert {f.suffix for f in CONTAINERFILES} == {".agent", ".collector"}


# --- command lines --------------------------------------------------------------------


def unit_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = line.split("=", 1)[1].split()
                assert argv[0] == BINARY, f"{unit.name}: ExecStart runs {argv[0]}, not {BINARY}"
                found.append((unit.name, argv[1:]))
    return found


def k8s_containers():
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] in ("DaemonSet", "Deployment"):
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    yield path.name, doc, container


def k8s_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for name, _doc, container in k8s_containers():
        assert "command" not in container, "the image's entrypoint is dnstrace; pass only args"
        found.append((name, container["args"]))
    return found


def nomad_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for path in NOMAD:
        for match in re.finditer(r"^\s*args\s*=\s*(\[.*\])\s*$", path.read_text(), re.M):
            found.append((path.name, json.loads(match.group(1))))
    return found


def containerfile_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for path in CONTAINERFILES:
        text = path.read_text()
        entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
        assert Path(entrypoint[0]).name == "dnstrace"
        found.append((path.name, json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))))
    return found


ALL_COMMAND_LINES = unit_command_lines() + k8s_command_lines() + nomad_command_lines() + containerfile_command_lines()


def test_every_packaging_file_has_a_command_line():
    assert {name for name, _ in ALL_COMMAND_LINES} >= {p.name for p in UNITS + K8S + NOMAD + CONTAINERFILES}


@pytest.mark.parametrize("where, argv", ALL_COMMAND_LINES, ids=[f"{w}" for w, _ in ALL_COMMAND_LINES])
def test_command_line_parses(where, argv, capsys):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `dnstrace {' '.join(argv)}` is rejected by the CLI: {capsys.readouterr().err}")
    assert getattr(args, "func", None), f"{where}: `dnstrace {' '.join(argv)}` names no subcommand"
    assert args.command in ("agent", "collector"), where


# --- environment variables ------------------------------------------------------------


def environment_variables() -> list[tuple[str, str, str]]:
    """(file, name, value) of every DNSTRACE_* variable the packaging sets."""
    found = []
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("Environment="):
                name, value = line.split("=", 1)[1].split("=", 1)
                found.append((unit.name, name, value))
    for name, _doc, container in k8s_containers():
        for env in container.get("env", []):
            found.append((name, env["name"], env.get("value", "from-kubernetes")))
    for path in NOMAD:
        for block in re.findall(r"env\s*\{(.*?)\}\n", path.read_text(), re.S):
            for name, value in re.findall(r"(\w+)\s*=\s*\"([^\"]*)\"", block):
                found.append((path.name, name, value))
    for path in CONTAINERFILES:
        for line in re.findall(r"^ENV (.*?)(?<!\\)$", path.read_text().replace("\\\n", " "), re.M):
            for name, value in re.findall(r"(\w+)=(\S+)", line):
                found.append((path.name, name, value))
    return [f for f in found if f[1].startswith("DNSTRACE_")]


def test_environment_variables_are_config_keys():
    variables = environment_variables()
    assert {name for _, name, _ in variables} >= {"DNSTRACE_AGENT_HOST_ID", "DNSTRACE_CONFIG"}
    known = {key.env for key in config_mod.KEYS} | NON_KEY_VARIABLES
    for where, name, value in variables:
        assert name in known, f"{where}: {name} is not a configuration variable"
        if name not in NON_KEY_VARIABLES:
            config_mod.load(environ={name: value, "DNSTRACE_CONFIG": str(PACKAGING / "dnstrace.toml")})


# --- config files ---------------------------------------------------------------------


def _untemplate(text: str) -> str:
    """Nomad templates: drop range/end, replace expressions by a value valid as host or port."""
    text = re.sub(r"\{\{-? *(range|end|with)[^}]*\}\}", "", text)
    return re.sub(r"\{\{[^}]*\}\}", "1", text)


def config_files() -> list[tuple[str, str]]:
    found = [("dnstrace.toml", (PACKAGING / "dnstrace.toml").read_text())]
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "ConfigMap":
                for name, text in doc["data"].items():
                    if name.endswith(".toml"):
                        found.append((f"{path.name}:{doc['metadata']['name']}", text))
    for path in NOMAD:
        for destination, text in re.findall(
                r'destination = "([^"]+\.toml)"\s*\n\s*data\s*=\s*<<-EOT\n(.*?)\n\s*EOT', path.read_text(), re.S):
            found.append((f"{path.name}:{destination}", _untemplate(text)))
    return found


CONFIG_FILES = config_files()


def test_every_manifest_ships_its_config():
    assert len(CONFIG_FILES) >= 5, [name for name, _ in CONFIG_FILES]


@pytest.mark.parametrize("where, text", CONFIG_FILES, ids=[w for w, _ in CONFIG_FILES])
def test_config_file_loads(where, text, tmp_path):
    path = tmp_path / "dnstrace.toml"
    path.write_text(text)
    config = config_mod.load(str(path), environ={})  # raises UsageError naming any bad key
    assert any(source.startswith("file") for source in config.sources.values()), where
    if config.sources["agent.signals"] != "default":
        from dnstrace.pipeline.runner import known_signal_names

        assert set(config["agent.signals"]) <= known_signal_names(), where


def test_agent_config_paths_match_mounts():
    """The files the agent's config names are where the manifests mount them."""
    for _where, text in CONFIG_FILES:
        table = config_mod.tomllib.loads(text)
        agent = table.get("agent", {})
        if "health_addr" in agent:
            split_host_port(agent["health_addr"])
    daemonset = next(doc for _, doc, _c in k8s_containers() if doc["kind"] == "DaemonSet")
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    config_text = next(text for where, text in CONFIG_FILES if "agent-daemonset" in where)
    agent = config_mod.tomllib.loads(config_text)["agent"]
    for key in ("tls_ca", "tls_cert", "tls_key", "spool_dir", "lock_file"):
        assert any(agent[key].startswith(mount + "/") or agent[key] == mount for mount in mounts), key
    args = container["args"]
    assert any(args[i] == "--config" and args[i + 1] in mounts for i in range(len(args) - 1))
    assert daemonset["spec"]["template"]["spec"]["hostPID"] is True
    for needed in ("/sys/fs/cgroup", "/sys/kernel/tracing", "/lib/modules", "/usr/src", "/var/lib/dnstrace"):
        assert needed in mounts, needed


# --- probes ---------------------------------------------------------------------------


def test_probes_use_the_health_endpoints_on_the_configured_port():
    config_text = next(text for where, text in CONFIG_FILES if "agent-daemonset" in where)
    _, health_port = split_host_port(config_mod.tomllib.loads(config_text)["agent"]["health_addr"])
    for _name, doc, container in k8s_containers():
        if doc["kind"] != "DaemonSet":
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in HEALTH_PATHS
            assert ports[get["port"]] == health_port
    nomad_agent = (PACKAGING / "nomad" / "dnstrace-agent.nomad.hcl").read_text()
    assert re.search(r'path\s*=\s*"/readyz"', nomad_agent)
    assert f'port "health" {{ static = {health_port} }}' in nomad_agent
    nomad_health = re.search(r'health_addr = "([^"]+)"', nomad_agent).group(1)
    assert split_host_port(nomad_health)[1] == health_port


# --- systemd --------------------------------------------------------------------------


def test_unit_capabilities_are_real_capabilities():
    header = Path("/usr/include/linux/capability.h")
    if not header.exists():
        pytest.skip("no /usr/include/linux/capability.h to check capability names against")
    known = set(re.findall(r"#define (CAP_[A-Z_]+)\s+\d+", header.read_text()))
    agent = (PACKAGING / "systemd" / "dnstrace-agent.service").read_text()
    caps = re.search(r"^CapabilityBoundingSet=(.*)$", agent, re.M).group(1).split()
    assert caps and set(caps) <= known, set(caps) - known
    assert "CAP_BPF" in caps and "CAP_PERFMON" in caps


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed (Debian systemd)")
def test_systemd_analyze_verify(tmp_path):
    binary = shutil.which("dnstrace") or str(Path(sys.executable).with_name("dnstrace"))
    assert Path(binary).exists(), "the dnstrace console script is not installed next to this python"
    copies = []
    for unit in UNITS:
        # verify checks that ExecStart's binary exists: point it at this installation's.
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(BINARY, binary))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *copies],
                            capture_output=True, text=True, timeout=120)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output
