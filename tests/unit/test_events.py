"""The event vocabulary: the generated docs are current, and the definitions cover what is stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dnstrace import events
from dnstrace.wire.codec import EVENT_COLUMN_FIELDS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_committed_docs_are_generated_from_the_definitions():
    generated = subprocess.run([sys.executable, "-m", "dnstrace.events", "--markdown"], check=True,
                               capture_output=True, text=True).stdout
    assert DOCS.read_text() == generated, "run: python -m dnstrace.events --markdown > docs/events.md"


def test_every_field_has_a_type_and_a_meaning():
    for kind, definition in events.EVENT_TYPES.items():
        for name, (type_text, meaning) in events._fields(definition).items():
            assert type_text and meaning, (kind, name)


def test_every_stored_column_is_a_field_of_some_kind():
    fields = {name for kind in events.EVENT_TYPES for name in events.kind_fields(kind)}
    assert set(EVENT_COLUMN_FIELDS) <= fields


def test_common_and_enrichment_fields():
    assert events.COMMON_FIELDS == ("kind", "ts", "host", "pid", "tid", "comm", "container", "pod", "namespace")
    assert events.ENRICHMENT_FIELDS == ("service", "nameservers", "search", "resolv_options")
    assert events.kind_fields("conntrack")[len(events.COMMON_FIELDS):][2:8] == events.CONNTRACK_COUNTERS


def test_is_failed_covers_every_connect_result_and_no_healthy_answer():
    results = ("established", "refused", "timeout", "reset", "closed", "unreachable")
    assert {r for r in results if events.is_failed({"kind": "connect", "result": r})} == events.FAILED_RESULTS
    assert not events.is_failed({"kind": "dns", "rcode": "NOERROR", "answered": True, "latency_ns": 5})


def test_undeclared_fields_names_what_the_vocabulary_lacks():
    # tests/support.TraceProcess holds every event of the kernel tests to this.
    assert events.undeclared_fields({"kind": "dns", "ts": 1, "qname": "a.", "bogus": 1}) == {"bogus"}
    assert events.undeclared_fields({"kind": "nonsense", "ts": 1}) == {"kind", "ts"}
    assert events.undeclared_fields({"kind": "connect", "result": "refused", "count": 3}) == set()
