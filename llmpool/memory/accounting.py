"""Per-operation accounting with a bounded number of keys, and in-flight bytes.

Keys come from callers (``"chat:gpt-4o"``); model names are not under
llmpool's control, so the table is bounded: beyond ``max_keys`` distinct
keys, further ones fold into :data:`OTHER`. The table never holds more than
``max_keys + 1`` entries.
"""

from __future__ import annotations

import threading

from llmpool.memory.report import OperationStats

__all__ = ["OTHER", "Accounting"]

#: The bucket that collects keys beyond the bound.
OTHER = "other"


class _Counters:
    """Mutable counters for one key; only touched under the table's lock."""

    __slots__ = ("bytes_in", "bytes_max", "bytes_out", "count", "duration_max", "duration_total")

    def __init__(self) -> None:
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_max = 0
        self.duration_total = 0.0
        self.duration_max = 0.0

    def freeze(self) -> OperationStats:
        return OperationStats(
            count=self.count,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            bytes_max=self.bytes_max,
            duration_total=self.duration_total,
            duration_max=self.duration_max,
        )


class Accounting:
    """Counts calls, bytes and durations per operation key, and bytes in flight.

    Thread-safe: one lock guards the table, the fold counter and the
    in-flight counter; each update holds it for a few attribute writes.
    """

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._lock = threading.Lock()  # guards _table, _folded, _inflight
        self._table: dict[str, _Counters] = {}
        self._folded = 0
        self._inflight = 0

    def record(self, key: str, bytes_in: int, bytes_out: int, duration: float | None) -> None:
        """Account one call of *key* (a *duration* of None counts no time)."""
        size = bytes_in + bytes_out
        with self._lock:
            counters = self._table.get(key)
            if counters is None:
                counters = self._new_key(key)
            counters.count += 1
            counters.bytes_in += bytes_in
            counters.bytes_out += bytes_out
            counters.bytes_max = max(counters.bytes_max, size)
            if duration is not None:
                counters.duration_total += duration
                counters.duration_max = max(counters.duration_max, duration)

    def _new_key(self, key: str) -> _Counters:
        """A table entry for a key not seen yet; the OTHER bucket beyond the bound."""
        if len(self._table) >= self._max_keys:
            self._folded += 1
            key = OTHER
            found = self._table.get(key)
            if found is not None:
                return found
        counters = self._table[key] = _Counters()
        return counters

    def add_inflight(self, delta: int) -> None:
        """Add *delta* bytes to the in-flight total (negative when released)."""
        with self._lock:
            self._inflight += delta

    @property
    def inflight(self) -> int:
        """Bytes currently being received or held by calls in progress."""
        return self._inflight

    @property
    def folded(self) -> int:
        """How many records went to :data:`OTHER` because the table was full."""
        return self._folded

    def __len__(self) -> int:
        return len(self._table)

    def snapshot(self) -> dict[str, OperationStats]:
        """A frozen copy of every key's counters."""
        with self._lock:
            return {key: counters.freeze() for key, counters in self._table.items()}

    def reset(self) -> None:
        """Forget everything, with a fresh lock (a forked child calls this)."""
        self._lock = threading.Lock()
        self._table = {}
        self._folded = 0
        self._inflight = 0
