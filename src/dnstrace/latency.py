"""The one latency histogram grid: top, the Prometheus metrics, the collector's rollups and queries, the web heatmap.

Bucket ``b`` holds latencies in [2^(b/8), 2^((b+1)/8)) ns: ``BUCKETS_PER_OCTAVE`` (8) buckets per power
of two, each about 9 % wide; bucket 0 also holds anything below 1 ns. The grid is part of the wire
contract: agents in ``summary`` mode ship rollup rows with their bucket and stores keep them, so it does
not change without a new schema version.

A quantile is read the same way everywhere: the bucket holding the event of nearest rank
(``ceil(q * count)``, 1-based) gives its upper edge, clamped to the exact maximum. It is never below the
latency of that event and at most ``QUANTILE_PRECISION`` (one bucket, 9.05 %) above it, so ``top``'s
p99 and ``dnstrace query``'s p99 of the same events are the same number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

BUCKETS_PER_OCTAVE = 8
QUANTILE_PRECISION = 2 ** (1 / BUCKETS_PER_OCTAVE) - 1  # relative, one bucket: ≈ 0.0905
MAX_BUCKET = 64 * BUCKETS_PER_OCTAVE  # above the bucket of any int64 latency (504)
# Prometheus bucket bounds (seconds): every octave edge of the grid from 2^20 ns (1.05 ms) to 2^35 ns
# (34.4 s), so each Prometheus bucket is a union of grid buckets. Prometheus counts a value equal to a
# bound in the bucket below it (``le``), the grid in the one above: only exact powers of two ns differ.
PROMETHEUS_BUCKETS_S: tuple[float, ...] = tuple(2**octave / 1e9 for octave in range(20, 36))


def bucket_of(latency_ns: int) -> int:
    """The grid bucket of a latency (SQL twin: ``dnstrace.collector.query.rollup.bucket_sql``)."""
    return 0 if latency_ns < 1 else math.floor(math.log2(latency_ns) * BUCKETS_PER_OCTAVE)


def bucket_upper_ns(bucket: int) -> float:
    """The upper edge of a bucket (excluded from it): what a quantile falling in it reads as."""
    return float(2 ** ((bucket + 1) / BUCKETS_PER_OCTAVE))


def quantile_ranks(qs: Sequence[float], count: int) -> list[int]:
    """1-based nearest ranks of ``qs`` among ``count`` events."""
    return [max(1, math.ceil(q * count)) for q in qs]


def quantiles(buckets: Mapping[int, int], qs: Sequence[float], max_ns: int | None) -> list[int | None]:
    """Several quantiles (ascending ``qs``) of a sparse histogram {bucket: events}, in one walk.

    ``max_ns`` is the exact largest latency: every answer is clamped to it (None: no clamp)."""
    count = sum(buckets.values())
    if not count:
        return [None] * len(qs)
    ranks = quantile_ranks(qs, count)
    out: list[int | None] = []
    seen = 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        while len(out) < len(ranks) and seen >= ranks[len(out)]:
            value = math.ceil(bucket_upper_ns(bucket))
            out.append(value if max_ns is None else min(value, max_ns))
        if len(out) == len(ranks):
            break
    return out + [max_ns] * (len(ranks) - len(out))


# Most histograms of ``top``'s one-second slots never see a value: they share this empty dict until
# their first one (``add`` gives the histogram its own). Never written to.
_EMPTY: dict[int, int] = {}


class Histogram:
    """Sparse histogram on the grid with exact count, sum and max."""

    __slots__ = ("buckets", "count", "sum", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = _EMPTY  # its own dict from the first value on
        self.count = 0
        self.sum = 0
        self.max = 0

    def add(self, ns: int) -> None:
        index = bucket_of(ns)
        if self.buckets is _EMPTY:
            self.buckets = {}
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.sum += ns
        if ns > self.max:
            self.max = ns

    def merge(self, other: Histogram) -> None:
        if not other.count:
            return
        if self.buckets is _EMPTY:
            self.buckets = {}
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> int | None:
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[int | None]:
        """Several quantiles (ascending ``qs``) in one walk over the buckets."""
        return quantiles(self.buckets, qs, self.max)
