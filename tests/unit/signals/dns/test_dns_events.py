"""Every way the tracker makes a ``dns`` event gives one field list (``Query.event`` spells it once)."""

from __future__ import annotations

# helpers of the sibling test modules (pytest puts this directory on sys.path)
from test_dns_pairs import paired
from test_dns_tracker import MS, T0, S, answer, query, tracker


def test_answered_timed_out_pending_and_paired_events_share_their_fields():
    t = tracker()
    t.packet(query(T0, 7))
    [answered] = t.packet(answer(T0 + MS, 7))
    [first_pair] = paired(t, query(T0, 8), answer(T0 + MS, 8))
    [repeated_pair] = paired(t, query(T0 + 2 * MS, 9), answer(T0 + 3 * MS, 9))  # its flow's template
    assert t.flow_events == 2
    t.packet(query(T0 + 4 * MS, 10))
    [pending] = t.pending()
    [held_by_kernel] = [t.query_event(query(T0 + 5 * MS, 11))]
    [timed_out] = t.expire(T0 + 10 * S)

    fields = list(answered)
    assert fields[0] == "kind" and answered["kind"] == "dns"
    assert list(first_pair) == fields and list(repeated_pair) == fields
    assert list(pending) == list(held_by_kernel) == [*fields, "pending"]
    assert list(timed_out) == [*fields, "timeout_ns"]
    for unanswered in (pending, held_by_kernel, timed_out):
        assert (unanswered["answered"], unanswered["rcode"], unanswered["latency_ns"], unanswered["answers"],
                unanswered["tc"], unanswered["ancount"]) == (False, None, None, [], False, 0)
    assert pending["pending"] is held_by_kernel["pending"] is True and timed_out["timeout_ns"] == S


def test_repeated_pair_needs_a_flow_seen_by_pair():
    t = tracker()
    assert t.repeated_pair("no such flow", T0, T0 + MS, 100, 100, 7, 1, 40000) is None
    q, a = query(T0, 7), answer(T0 + MS, 7)
    key = ("flow", 1)
    [event] = t.pair(q.ts, a.ts, q.cookie, q.pid, q.tid, q.comm, q.family, q.saddr, q.sport, q.daddr, q.dport,
                     q.data, q.payload_len, a.data, a.payload_len, key)
    again = t.repeated_pair(key, T0 + 10 * MS, T0 + 12 * MS, q.pid, q.tid, 8, q.cookie, q.sport)
    assert again is not None
    assert again == {**event, "ts": T0 + 10 * MS, "id": 8, "latency_ns": 2 * MS}
    assert again["answers"] is not event["answers"]  # each event its own list
