"""Signals declared as data: the registry, Options from flags (cli) and from the config (agent)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from dnstrace.cli.trace import add_common_arguments, add_option_flags, options_from_args
from dnstrace.config import load
from dnstrace.signals.base import SignalSpec
from dnstrace.signals.registry import SIGNAL_MODULES, all_signals


def _options(name: str, argv: list[str]):
    spec = all_signals()[name]
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_common_arguments(parser)
    add_option_flags(parser, spec.options)
    return options_from_args(spec, parser.parse_args(argv))


def test_every_module_declares_one_signal_under_its_own_name():
    signals = all_signals()
    assert list(signals) == ["gai", "dns", "lookups", "tcp", "drops", "conntrack"]
    assert len(SIGNAL_MODULES) == len(signals)
    for spec in signals.values():
        assert dataclasses.is_dataclass(spec.options)
        spec.options()  # every field has a default


def test_no_flag_keeps_every_default():
    for name, spec in all_signals().items():
        assert _options(name, []) == spec.options(), name


def test_flags_set_their_fields():
    assert _options("drops", ["--no-explain", "--reason", "IP_RPFILTER", "--reason", "NETFILTER_DROP",
                              "--event-budget", "3", "--iif", "eth0"]) == \
        all_signals()["drops"].options(explain=False, reasons=("IP_RPFILTER", "NETFILTER_DROP"), event_budget=3,
                                       iifs=("eth0",))
    conntrack = _options("conntrack", ["--no-drops", "--every-interval", "--interval", "250ms"])
    assert (conntrack.with_drops, conntrack.every_interval, conntrack.interval_ns) == (False, True, 250_000_000)
    tcp = _options("tcp", ["--dport", "53", "--result", "timeout"])
    assert (tcp.dports, tcp.results) == ((53,), ("timeout",))


def test_common_flags_reach_the_options_that_use_them():
    gai = _options("gai", ["--pid", "7", "--pid", "9", "--min-latency", "1s"])
    assert (gai.pids, gai.min_latency_ns) == ((7, 9), 1_000_000_000)
    lookups = _options("lookups", ["--pid", "7", "--min-latency", "1s", "--port", "8600"])
    assert lookups.pids == (7,) and lookups.all_ports() == [53, 8600]
    assert not hasattr(lookups, "min_latency_ns")  # lookups filters on the lookup's latency, not in the kernel


def test_a_bad_value_is_a_usage_error():
    with pytest.raises(argparse.ArgumentError, match="not a duration"):
        _options("conntrack", ["--interval", "often"])
    with pytest.raises(argparse.ArgumentError, match="invalid int value"):
        _options("tcp", ["--event-budget", "many"])


def test_the_agent_maps_config_keys_onto_options():
    config = load(path=None, flags={"agent.dns_ports": "53,5353", "agent.libc_rescan_interval": "2s",
                                    "agent.conntrack_interval": "7s"}, environ={})
    signals = all_signals()
    lookups = signals["lookups"].options_from_config(config)
    assert (lookups.dns_ports, lookups.libc_rescan_interval_ns, lookups.pids) == ((53, 5353), 2_000_000_000, ())
    assert signals["conntrack"].options_from_config(config).interval_ns == 7_000_000_000
    assert signals["tcp"].options_from_config(config) == signals["tcp"].options()


def test_a_config_option_naming_no_field_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Options:
        interval_ns: int = 1

    with pytest.raises(TypeError, match="interval"):
        SignalSpec("x", "", "", (), Options, lambda options: [], config_options={"agent.conntrack_interval": "interval"})
