"""Endpoint cool-downs shared between processes through the state backend.

With a shared state backend (``state: {backend: redis}``), a cool-down one
process decides is written with its deadline (``set_cooldown``, which only
ever extends), and every process reads the group's cool-downs at most once
per ``interval`` seconds, before a pick, and applies them to its own health
book (:meth:`~llmpool.endpoints.health.HealthBook.cool_until`, which never
shortens). So a deployment known to be down costs the fleet one discovery,
not one per process; each process still probes it once after the deadline.

One rule decides expiry in both backends: a cool-down holds while its
deadline is in the future on the backend's clock (Redis ``TIME``). An
endpoint is named in the backend by a digest of its base URL, so groups in
different services that share a deployment share its cool-downs too.

A failing backend never fails or delays a call beyond ``state.timeout``: the
error is counted by the backend (and logged at most once a minute) and this
process goes on with what it knows. Thread-safe: one thread claims each
interval's read (the others skip it), and no lock is held across the
backend's I/O, the health book or a log call.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping

from llmpool.endpoints.health import COOLING, HealthBook, StateChange
from llmpool.exceptions import LLMPoolError
from llmpool.forking import reset_after_fork
from llmpool.state.base import StateBackend

__all__ = ["SCOPE", "SharedCooldowns", "endpoint_id"]

log = logging.getLogger(__name__)

#: The backend scope every group's cool-downs live in.
SCOPE = "endpoints"

#: The reason given to a cool-down learnt from another process.
SHARED_REASON = "cool-down shared by another process"


def endpoint_id(base_url: str) -> str:
    """The name of an endpoint in the backend: a digest of its base URL."""
    return hashlib.sha256(base_url.encode()).hexdigest()[:20]


class SharedCooldowns:
    """Publishes this process's cool-downs and applies the others'.
    Thread-safe (see the module docstring)."""

    def __init__(
        self,
        backend: StateBackend,
        book: HealthBook,
        base_urls: Mapping[str, str],
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.book = book
        self.interval = interval
        self.clock = clock
        self.wall = wall
        self._ids = {name: endpoint_id(url) for name, url in base_urls.items()}
        self._names = {ident: name for name, ident in self._ids.items()}
        # Guards _next_sync and the counters (microseconds; never across the
        # backend's I/O, the book or a log call).
        self._lock = threading.Lock()
        self._next_sync = 0.0
        self.published = 0
        self.applied = 0
        reset_after_fork(self, SharedCooldowns._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it
        self._next_sync = 0.0  # the child reads the shared cool-downs at once

    def publish(self, change: StateChange) -> None:
        """Write a cool-down this process decided (outside every lock)."""
        if change.new != COOLING or change.cooldown is None or change.reason == SHARED_REASON:
            return
        until = self.wall() + change.cooldown
        try:
            self.backend.set_cooldown(SCOPE, self._ids[change.endpoint], until)
        except LLMPoolError as err:  # counted by the backend; the call goes on
            log.debug("could not share the cool-down of %s: %s", change.endpoint, err)
            return
        with self._lock:
            self.published += 1

    def sync(self, time_left: float | None = None) -> None:
        """Read the shared cool-downs when *interval* has passed since the last
        read (and the call has time for it), and apply them."""
        now = self.clock()
        if time_left is not None and time_left < 1.0:
            return
        with self._lock:  # claim this interval's read: the other threads go on
            if now < self._next_sync:
                return
            self._next_sync = now + self.interval
        try:
            shared = self.backend.get_cooldowns(SCOPE)
        except LLMPoolError as err:
            log.debug("could not read shared cool-downs: %s", err)
            return
        wall = self.wall()
        applied = 0
        for ident, until in shared.items():
            name = self._names.get(ident)
            if name is not None and until > wall:
                applied += self.book.cool_until(name, now + (until - wall), SHARED_REASON)
        if applied:
            with self._lock:
                self.applied += applied

    def stats(self) -> dict[str, int]:
        """Cool-downs published by this process, and shared ones applied."""
        with self._lock:
            return {"published": self.published, "applied": self.applied}
