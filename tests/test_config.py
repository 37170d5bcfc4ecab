"""Configuration: precedence (default < file < env < flag), errors that name the key, rendering."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dnstrace import config as config_mod
from dnstrace.config import KEYS, load, markdown_table, render_toml
from dnstrace.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path, text, name="dnstrace.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_any_file(tmp_path):
    config = load(environ={"DNSTRACE_CONFIG": ""}) if not Path(config_mod.DEFAULT_CONFIG_PATH).exists() \
        else load(write(tmp_path, ""), environ={})
    for key in KEYS:
        assert config[key.name] == key.default
        assert config.sources[key.name] == "default"


def test_precedence_file_then_env_then_flag(tmp_path):
    path = write(tmp_path, """
[agent]
collector = "file.example:7053"
spool_dir = "/file/spool"
batch_interval = "2s"
dns_ports = [53, 8600]
""")
    env = {"DNSTRACE_AGENT_SPOOL_DIR": "/env/spool", "DNSTRACE_AGENT_BATCH_INTERVAL": "3s"}
    config = load(path, flags={"agent.batch_interval": "4s", "agent.collector": None}, environ=env)
    assert config["agent.collector"] == "file.example:7053"  # file (flag not given)
    assert config["agent.spool_dir"] == "/env/spool"  # env beats file
    assert config["agent.batch_interval"] == 4_000_000_000  # flag beats env and file
    assert config["agent.dns_ports"] == [53, 8600]
    assert config.sources["agent.collector"] == f"file {path}"
    assert config.sources["agent.spool_dir"] == "env DNSTRACE_AGENT_SPOOL_DIR"
    assert config.sources["agent.batch_interval"] == "flag"
    assert config.sources["agent.lock_file"] == "default"


def test_config_file_from_environment_variable(tmp_path):
    path = write(tmp_path, '[log]\nformat = "json"\n')
    assert load(environ={"DNSTRACE_CONFIG": path})["log.format"] == "json"


@pytest.mark.parametrize("text, key, needle", [
    ('[agent]\ndns_ports = [53, 70000]\n', "agent.dns_ports", "not a port number"),
    ('[agent]\nbatch_interval = "soon"\n', "agent.batch_interval", "not a duration"),
    ('[agent]\nbatch_interval = 5\n', "agent.batch_interval", "needs a unit"),
    ('[agent]\nspool_max_bytes = "lots"\n', "agent.spool_max_bytes", "not a size"),
    ('[agent]\nbatch_max_events = 0\n', "agent.batch_max_events", "at least 1"),
    ('[agent]\ninsecure = "maybe"\n', "agent.insecure", "true or false"),
    ('[agent]\nhealth_addr = "localhost"\n', "agent.health_addr", "HOST:PORT"),
    ('[agent]\ncollector = "collector"\n', "agent.collector", "HOST:PORT"),
    ('[agent]\nsignals = [1, 2]\n', "agent.signals", "list of strings"),
    ('[log]\nformat = "xml"\n', "log.format", "console, json"),
    ('[collector]\nstore = "postgres://x"\n', "collector.store", "duckdb:PATH"),
])
def test_invalid_value_names_the_key(tmp_path, text, key, needle):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load(path, environ={})
    assert key in err.value.message and needle in err.value.message
    assert f"file {path}" in err.value.message


def test_unknown_key_in_file_suggests_the_right_one(tmp_path):
    path = write(tmp_path, '[agent]\nspool_dri = "/x"\n')
    with pytest.raises(UsageError) as err:
        load(path, environ={})
    assert "'agent.spool_dri'" in err.value.message and "agent.spool_dir" in err.value.hint


def test_unknown_environment_variable_is_an_error():
    with pytest.raises(UsageError) as err:
        load(environ={"DNSTRACE_AGENT_COLECTOR": "x:1"})
    assert "DNSTRACE_AGENT_COLECTOR" in err.value.message and "DNSTRACE_AGENT_COLLECTOR" in err.value.hint
    # Other DNSTRACE_* variables (the config path, the dev script's venv) are not keys.
    load(environ={"DNSTRACE_VENV": "/x", "DNSTRACE_CONFIG": ""})


def test_invalid_env_value_names_variable_and_key():
    with pytest.raises(UsageError, match=r"agent.dns_ports \(env DNSTRACE_AGENT_DNS_PORTS\)"):
        load(environ={"DNSTRACE_AGENT_DNS_PORTS": "53,abc"})


def test_bad_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load(str(tmp_path / "missing.toml"), environ={})
    with pytest.raises(UsageError, match="not valid TOML"):
        load(write(tmp_path, "[agent\n"), environ={})
    with pytest.raises(UsageError, match="cannot be read"):
        load(str(tmp_path), environ={})  # a directory


def test_print_config_round_trips(tmp_path):
    path = write(tmp_path, '[agent]\ndns_ports = [53, 8600]\nbatch_interval = "250ms"\ningest_token = "s3cret"\n')
    config = load(path, environ={"DNSTRACE_AGENT_SPOOL_MAX_BYTES": "1GiB"})
    text = render_toml(config)
    assert "s3cret" not in text  # secrets are never printed
    assert f"# file {path}" in text and "# env DNSTRACE_AGENT_SPOOL_MAX_BYTES" in text
    table = tomllib.loads(text)
    table["agent"].pop("ingest_token")
    again = load(write(tmp_path, render_toml_from(table), "again.toml"), environ={})
    for key in KEYS:
        if key.name != "agent.ingest_token":
            assert again[key.name] == config[key.name], key.name


def render_toml_from(table: dict) -> str:
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        for name, value in values.items():
            lines.append(f"{name} = {config_mod.json.dumps(value)}" if not isinstance(value, bool)
                         else f"{name} = {'true' if value else 'false'}")
    return "\n".join(lines) + "\n"


def test_readme_configuration_table_matches_keys():
    readme = (REPO / "README.md").read_text()
    assert markdown_table() in readme, "README is stale: paste `python -m dnstrace.config` output"


def run_cli(*argv, env=None):
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DNSTRACE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dnstrace", *argv], capture_output=True, text=True,
                          env=full_env, timeout=60)


def test_cli_print_config_and_precedence(tmp_path):
    path = write(tmp_path, '[agent]\nspool_dir = "/file"\nmetrics_addr = "127.0.0.1:9100"\n')
    result = run_cli("agent", "--config", path, "--print-config", "--metrics-addr", ":9200",
                     env={"DNSTRACE_AGENT_SPOOL_DIR": "/env"})
    assert result.returncode == 0, result.stderr
    table = tomllib.loads(result.stdout)
    assert table["agent"]["spool_dir"] == "/env"
    assert table["agent"]["metrics_addr"] == ":9200"
    assert 'metrics_addr = ":9200"  # flag' in result.stdout


def test_cli_spool_flag_alias(tmp_path):
    """The issue's `dnstrace agent --spool DIR` is the same flag as --spool-dir."""
    result = run_cli("agent", "--config", write(tmp_path, ""), "--print-config", "--spool", "/alias")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["agent"]["spool_dir"] == "/alias"


def test_cli_invalid_config_is_one_line_naming_the_key(tmp_path):
    path = write(tmp_path, '[agent]\nbatch_max_events = "many"\n')
    result = run_cli("agent", "--config", path, "--print-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("dnstrace: error: invalid value for agent.batch_max_events")
    result = run_cli("agent", "--print-config", "--health-addr", "nowhere")
    assert result.returncode == 2 and "agent.health_addr (flag)" in result.stderr


def test_log_format_from_config_file_applies(tmp_path):
    path = write(tmp_path, '[log]\nformat = "json"\n[agent]\nsignals = ["no-such-signal"]\n')
    result = run_cli("agent", "--config", path)
    assert result.returncode == 2
    assert "agent.signals: unknown signal 'no-such-signal'" in result.stderr
    script = (
        "import argparse, sys\n"
        "from dnstrace import log\n"
        "from dnstrace.cli.agent import config_from_args\n"
        f"config_from_args(argparse.Namespace(config={path!r}, log_format=None, log_level='info'))\n"
        "log.get('test').info('hello', answer=42)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    line = result.stderr.strip().splitlines()[-1]
    assert config_mod.json.loads(line)["answer"] == 42 and config_mod.json.loads(line)["event"] == "hello"
    # The top-level flag wins over the file.
    result = run_cli("--log-format", "console", "agent", "--config", path, "--print-config")
    assert 'format = "console"  # flag' in result.stdout
