"""A histogram of plain numbers, for /metrics: the process that observes keeps the counts, the
gateway renders them with prometheus_client (rpc/metrics.py). Bounds are Prometheus bucket bounds."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


def exponential_bounds(start: float, factor: float, count: int) -> tuple[float, ...]:
    """prometheus.ExponentialBuckets: start, start*factor, ... (count bounds)."""
    return tuple(start * factor**i for i in range(count))


class Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        assert bounds and list(bounds) == sorted(bounds)
        self.bounds = bounds
        self.bucket_counts = [0] * len(bounds)  # not cumulative; past the last bound: only in count
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        i = bisect_left(self.bounds, value)
        if i < len(self.bounds):
            self.bucket_counts[i] += 1

    def report(self) -> dict[str, Any]:
        """What crosses the process boundary (msgpack): bounds with their counts, count and sum."""
        return {"buckets": list(zip(self.bounds, self.bucket_counts)), "count": self.count, "sum": self.sum}
