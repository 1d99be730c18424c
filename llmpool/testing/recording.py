"""What the mock server saw: one frozen record per request, kept in a bounded deque."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.testing.faults import Fault

__all__ = ["RecordedRequest", "Recorder"]


@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request as the mock server received it. Immutable; share freely.

    ``headers`` has lower-case names (repeated headers joined with ``", "``);
    ``json`` is the decoded body, or None when the body is empty or not JSON.
    ``connection_id`` numbers the server's TCP connections from 1 in accept
    order; ``index_on_connection`` numbers the requests on one connection
    from 1. ``timestamp`` is ``time.monotonic()`` when the request was
    read. ``fault`` is the fault the server applied (None: a normal answer).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)
    json: Any = attrs.field(repr=False)
    connection_id: int
    index_on_connection: int
    timestamp: float
    fault: Fault | None

    @property
    def stream(self) -> bool:
        """Whether the body asked for a stream (``"stream": true``)."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header *name* (any case), or *default*."""
        return self.headers.get(name.lower(), default)


class Recorder:
    """A bounded, thread-safe log of :class:`RecordedRequest` values.

    Thread-safe: connection threads append, test threads read copies. One
    condition guards the deque and the total count.
    """

    def __init__(self, maxlen: int) -> None:
        # Guards _records and _total; notified on every append.
        self._cond = threading.Condition()
        self._records: collections.deque[RecordedRequest] = collections.deque(maxlen=maxlen)
        self._total = 0

    def append(self, record: RecordedRequest) -> None:
        """Keep *record* (dropping the oldest one when full) and wake waiters."""
        with self._cond:
            self._records.append(record)
            self._total += 1
            self._cond.notify_all()

    def snapshot(self) -> list[RecordedRequest]:
        """A copy of the kept records, oldest first."""
        with self._cond:
            return list(self._records)

    @property
    def total(self) -> int:
        """Requests recorded since the start or the last :meth:`clear`, dropped ones included."""
        with self._cond:
            return self._total

    def clear(self) -> None:
        """Forget every record and reset the total."""
        with self._cond:
            self._records.clear()
            self._total = 0

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until *count* requests were recorded; False if *timeout* passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._total < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True
