"""Which fault the next request gets: header, then the scripted queue, then chance."""

from __future__ import annotations

import collections
import random
import threading
from collections.abc import Iterable

from llmpool.exceptions import ConfigError
from llmpool.testing.faults import Fault, parse_fault
from llmpool.testing.settings import MockSettings

__all__ = ["FAULT_HEADER", "FaultInjector"]

#: The request header that asks for one fault (text form) for that request.
FAULT_HEADER = "x-mock-fault"


class FaultInjector:
    """Chooses each request's fault. Thread-safe: one lock guards the queue and the RNG.

    Order of precedence: the request's ``X-Mock-Fault`` header (the queue is
    left alone), the scripted queue (first in, first out), then a random
    fault with probability ``settings.fault_rate`` drawn from a seeded RNG,
    so a seed and a sequence of requests give the same faults every run.
    """

    def __init__(self, seed: int | None) -> None:
        # Guards _queue and _rng.
        self._lock = threading.Lock()
        self._queue: collections.deque[Fault] = collections.deque()
        self._rng = random.Random(seed)

    def inject(self, faults: Iterable[Fault]) -> None:
        """Append *faults* to the queue; each serves one request."""
        with self._lock:
            self._queue.extend(faults)

    def pending(self) -> tuple[Fault, ...]:
        """The queued faults, next first."""
        with self._lock:
            return tuple(self._queue)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._queue.clear()

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequence from *seed*."""
        with self._lock:
            self._rng = random.Random(seed)

    def choose(self, header: str | None, settings: MockSettings) -> Fault | None:
        """The fault for one request (None: answer normally).

        A header that does not parse gives a 400 fault naming the problem.
        """
        if header:
            try:
                return parse_fault(header)
            except ConfigError as exc:
                return Fault.status(400, message=f"bad {FAULT_HEADER} header: {exc}")
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if settings.fault_rate and self._rng.random() < settings.fault_rate:
                return self._rng.choice(settings.random_faults)
        return None
