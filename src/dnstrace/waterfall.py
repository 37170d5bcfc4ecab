"""One lookup's story as text: each wire attempt on its own line, placed on the lookup's time line.

Shared by ``dnstrace top``'s detail pane and ``dnstrace query --kind lookup``::

    web.example.test  1.00s  ok  (2 attempts, 2 servers, 1 timeout)
    ├─ +0ns      |███████████████████ | A     udp 10.53.0.9:53      no answer, gave up after 1.00s
    └─ +1.00s    |                   █| A     udp 10.53.0.2:53      NOERROR 412.0µs, 1 answer: 10.0.0.5

An attempt's wait is its answer latency, or for an unanswered one the resolver timeout it
sat out (``timeout_ns``; else the resolv.conf timeout; else up to the lookup's end). TCP
attempts show the connect outcome and each SYN retransmit when ``related`` carries the
process's ``connect`` / ``syn_retry`` events for that source port. A lookup through a node-local
cache names it (``via``) and shows the cache's own upstream queries under the attempt they served.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnstrace.units import format_duration_ns as dur

BAR_WIDTH = 20


def attempt_wait_ns(attempt: dict, lookup: dict) -> int:
    """How long this attempt waited: its answer, else its timeout, else until the lookup ended."""
    if attempt.get("answered") is not False and attempt.get("latency_ns") is not None:
        return int(attempt["latency_ns"])
    start, end = attempt.get("ts"), _end_ns(lookup)
    left = (end - start) if (start is not None and end is not None) else None
    timeout = attempt.get("timeout_ns")
    if timeout is None:
        seconds = (lookup.get("resolv_conf") or {}).get("timeout")
        timeout = int(seconds * 1e9) if isinstance(seconds, (int, float)) else None
    if timeout is None:
        return max(0, left or 0)
    return int(timeout) if left is None else max(0, min(int(timeout), left))


def _end_ns(lookup: dict) -> int | None:
    if lookup.get("ts") is None or lookup.get("latency_ns") is None:
        return None
    return lookup["ts"] + lookup["latency_ns"]


def _bar(offset_ns: int, wait_ns: int, total_ns: int, width: int) -> str:
    if total_ns <= 0 or width <= 0:
        return ""
    first = min(width - 1, max(0, int(offset_ns * width / total_ns)))
    last = min(width, max(first + 1, round((offset_ns + wait_ns) * width / total_ns)))
    return "|" + " " * first + "█" * (last - first) + " " * (width - last) + "|"


def _outcome(attempt: dict, wait_ns: int) -> str:
    if attempt.get("answered") is False:
        return f"no answer, gave up after {dur(wait_ns)}"
    text = f"{attempt.get('rcode') or '?'} {dur(attempt.get('latency_ns'))}"
    if attempt.get("tc"):
        text += ", truncated (TC)"
    answers = attempt.get("answers") or []
    if answers:
        text += f", {len(answers)} answer{'s' if len(answers) != 1 else ''}: {', '.join(map(str, answers[:3]))}"
        text += "…" if len(answers) > 3 else ""
    elif attempt.get("ancount") == 0 and attempt.get("rcode") == "NOERROR":
        text += ", no records"
    return text


def _tcp_lines(attempt: dict, related: Sequence[dict], start_ns: int) -> list[str]:
    """The TCP connection this attempt rode on: SYN retransmits and the connect outcome."""
    sport, server = attempt.get("sport"), attempt.get("server")
    mine = [e for e in related if e.get("sport") == sport and e.get("daddr") == server and sport is not None]
    lines = []
    for event in sorted(mine, key=lambda e: e.get("ts") or 0):
        offset = f"+{dur((event.get('ts') or start_ns) - start_ns)}"
        if event.get("kind") == "syn_retry":
            lines.append(f"{offset:<9} SYN retransmit #{event.get('retry') or '?'} to {server}:{event.get('dport')}"
                         f" ({dur(event.get('elapsed_ns'))} into connect)")
        elif event.get("kind") == "connect":
            lines.append(f"{offset:<9} TCP connect {event.get('result') or '?'} after {dur(event.get('latency_ns'))}"
                         f", {event.get('retries') or 0} SYN retransmits")
    return lines


def waterfall_lines(lookup: dict, related: Sequence[dict] = (), bar_width: int = BAR_WIDTH,
                    header: bool = True) -> list[str]:
    """The lookup's header line, then one tree line per attempt (and its TCP connection's lines)."""
    attempts = [a for a in lookup.get("attempts") or [] if isinstance(a, dict)]
    start = lookup.get("ts")
    total = lookup.get("latency_ns") or 0
    lines = []
    if header:
        timeouts = sum(1 for a in attempts if a.get("answered") is False)
        servers = list(dict.fromkeys(a.get("server") for a in attempts if a.get("server")))
        facts = [f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"]
        if servers:
            facts.append(f"{len(servers)} server{'s' if len(servers) != 1 else ''}")
        if timeouts:
            facts.append(f"{timeouts} timeout{'s' if timeouts != 1 else ''}")
        via = lookup.get("via") or {}
        through = f"  via {via.get('program') or via.get('comm')} (pid {via.get('pid')})" if via else ""
        lines.append(f"{lookup.get('name')}  {dur(lookup.get('latency_ns'))}  {lookup.get('error') or 'ok'}  "
                     f"({', '.join(facts)}){through}")
    if not attempts:
        lines.append("└─ no wire queries seen (answered from a cache, /etc/hosts or a local socket)")
        return lines
    for i, attempt in enumerate(attempts):
        last = i == len(attempts) - 1
        offset = (attempt.get("ts") - start) if (attempt.get("ts") is not None and start is not None) else 0
        wait = attempt_wait_ns(attempt, lookup)
        proto = attempt.get("proto") or "udp"
        where = f"{attempt.get('server')}:{attempt.get('dport') or 53}"
        label = f"+{dur(offset)}"
        bar = _bar(offset, wait, max(total, offset + wait), bar_width) + " " if bar_width else ""
        line = (f"{'└─' if last else '├─'} {label:<9} {bar}{attempt.get('qtype') or '?':<5} {proto:<3} "
                f"{where:<18} {_outcome(attempt, wait)}")
        if attempt.get("tcp_fallback"):
            line += " (TCP retry after TC)"
        if attempt.get("retransmit"):
            line += " (retransmitted)"
        lines.append(line)
        for hop in attempt.get("upstream") or []:  # what the node-local cache asked meanwhile
            hop_outcome = "no answer" if hop.get("answered") is False else (hop.get("rcode") or "?")
            lines.append(("   " if last else "│  ") + f"   ↳ upstream {hop.get('server')} {hop.get('proto') or 'udp'} "
                         f"{hop_outcome} {dur(hop.get('latency_ns'))}")
        if proto == "tcp" and related:
            lines += [("   " if last else "│  ") + "   " + sub for sub in _tcp_lines(attempt, related, start or 0)]
    return lines
