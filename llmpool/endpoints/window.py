"""An endpoint's recent calls and failures, per second (for the health book)."""

from __future__ import annotations

from collections import deque

__all__ = ["Window"]


class Window:
    """Outcomes per second of one endpoint: ``[second, calls, failures]``
    buckets, oldest first. Constant work per call and bounded memory (one
    bucket per second of the window) however many calls arrive. Guarded by
    the book's lock."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()

    def add(self, now: float, ok: bool) -> None:
        second = int(now)
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            bucket = buckets[-1]
        else:
            bucket = [second, 0, 0]
            buckets.append(bucket)
            if len(buckets) > 4096:  # a window longer than an hour of one-call seconds
                buckets.popleft()
        bucket[1] += 1
        if not ok:
            bucket[2] += 1

    def counts(self, horizon: float) -> tuple[int, int]:
        """``(calls, failures)`` since *horizon* (whole seconds: a bucket
        counts while any part of its second is inside the window)."""
        buckets = self.buckets
        while buckets and buckets[0][0] + 1 <= horizon:
            buckets.popleft()
        return sum(b[1] for b in buckets), sum(b[2] for b in buckets)

    def clear(self) -> None:
        self.buckets.clear()
