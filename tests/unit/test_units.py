"""Durations and sizes as users type them."""

import pytest

from dnstrace.errors import UsageError
from dnstrace.units import format_duration_ns, parse_duration_ns, parse_size


@pytest.mark.parametrize("text,ns", [
    ("1s", 1_000_000_000), ("250ms", 250_000_000), ("1.5s", 1_500_000_000), ("10m", 600_000_000_000),
    ("3", 3_000_000_000), ("40us", 40_000), ("2h", 7_200_000_000_000), ("7d", 604_800_000_000_000),
])
def test_parse_duration(text, ns):
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "fast", "1y", "-1s", "1 s s"])
def test_parse_duration_rejects(text):
    with pytest.raises(UsageError) as err:
        parse_duration_ns(text)
    assert "duration" in err.value.message


@pytest.mark.parametrize("text,size", [("512MiB", 512 * 1024**2), ("2GiB", 2 * 1024**3), ("100000", 100000),
                                        ("1k", 1000)])
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects():
    with pytest.raises(UsageError):
        parse_size("12 parsecs")


@pytest.mark.parametrize("ns,text", [(None, "-"), (850, "850ns"), (12_300, "12.3µs"), (4_500_000, "4.5ms"),
                                      (5_000_000_000, "5.00s"), (123_000_000_000, "2m03s")])
def test_format_duration(ns, text):
    assert format_duration_ns(ns) == text
