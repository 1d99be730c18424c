"""The health book: what a client knows of each endpoint of its group.

Per endpoint: its state (``healthy``, ``cooling``, ``half_open``), its
calls and failures per second over the last ``window`` seconds, connection failures in a row, the
cool-down deadline and how many cool-downs came in a row, calls in flight and
routed, failures, the latency average and the last error.

- An endpoint **cools down** when its failure share over the window reaches
  the threshold (with enough calls), after N connection failures in a row,
  or when a 429/503 carries ``Retry-After`` (at least that long). The n-th
  cool-down in a row lasts ``cooldown * 2**(n-1)``, at most ``max_cooldown``.
  A cool-down never shortens one already running: the later deadline wins.
  Failures of calls that were already in flight when it cooled add nothing
  (sixteen threads failing at once are one event, not sixteen).
- When its cool-down is over it is **half-open**: the next pick sends one
  probe call there (before any healthy endpoint, so a recovered endpoint gets
  traffic back at once); success makes it healthy and resets the growth,
  failure cools it down again, longer.

Thread-safe: one small lock guards every record; it is held for
microseconds (no I/O, no sleep, no logging, no plugin call under it). State
changes are collected under the lock and reported after it (``on_change``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from llmpool.endpoints.model import Endpoint, HealthConfig
from llmpool.endpoints.records import (
    COOLING,
    HALF_OPEN,
    HEALTHY,
    PROBE_POLL,
    Outcome,
    Pick,
    Record,
    StateChange,
)
from llmpool.endpoints.routing import EndpointView, KeyedStrategy, Strategy, default
from llmpool.forking import renew_lock, reset_after_fork

__all__ = [
    "COOLING",
    "HALF_OPEN",
    "HEALTHY",
    "HealthBook",
    "Outcome",
    "Pick",
    "StateChange",
]


class HealthBook:
    """The routing and health state of one endpoint group.

    Thread-safe: share one per client between all threads (see the module
    docstring for the lock's rules). *clock* is injectable for tests;
    *on_change* receives each :class:`StateChange`, outside the lock.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        config: HealthConfig,
        strategy: Strategy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[StateChange], None] | None = None,
    ) -> None:
        self.config = config
        self._alpha = config.latency_alpha
        self.strategy = strategy
        self.clock = clock
        self.on_change = on_change
        # Guards every Record (microseconds; never across I/O or a callback).
        self._lock = threading.Lock()
        self._records = {e.name: Record(e) for e in endpoints}
        #: How many records are not healthy, and whether a pick takes the
        #: short way (none, with a keyed strategy).
        self._unhealthy = 0
        self._fast = False
        #: The records of each tuple of names picked from (as routing hands them).
        self._candidates: dict[tuple[str, ...], list[Record]] = {}
        #: The last tuple of names picked from and its records (under the lock).
        self._last: tuple[Sequence[str] | None, list[Record]] = (None, [])
        self._keyed = isinstance(strategy, KeyedStrategy)
        self._key: Callable[[Any], Any] = (
            strategy.record_key if isinstance(strategy, KeyedStrategy) else id  # id: unused
        )
        self._default = strategy is default
        self._count_unhealthy(0)
        reset_after_fork(self, renew_lock)  # a parent thread may have held it

    @property
    def names(self) -> tuple[str, ...]:
        """The endpoints' names, in the group's order."""
        return tuple(self._records)

    def pick(self, names: Sequence[str]) -> Pick:
        """Choose among the endpoints *names* (those serving the call's model)
        and count the call in flight there; or say how long until one may
        take it. A half-open endpoint whose probe is not out yet is chosen
        first, as the probe."""
        lock = self._lock
        lock.acquire()  # not ``with``: this is every call's path, and ``with`` costs more
        try:
            if self._fast:  # every endpoint healthy, a keyed strategy: the common case
                last, candidates = self._last  # the same tuple as the last pick's, mostly
                if last is not names:
                    candidates = self._candidates_of(names)
                if len(candidates) == 1:
                    chosen = candidates[0]
                elif self._default:  # the default strategy's key, inline (half min()'s time)
                    chosen = candidates[0]
                    best = (chosen.in_flight, chosen.failing, chosen.rank_latency)
                    for record in candidates:
                        rank = (record.in_flight, record.failing, record.rank_latency)
                        if rank < best:
                            chosen, best = record, rank
                else:
                    chosen = min(candidates, key=self._key)
                chosen.in_flight += 1
                chosen.share += 1
                return chosen.pick
        finally:
            lock.release()
        return self._pick_among_unhealthy(names)

    def _candidates_of(self, names: Sequence[str]) -> list[Record]:
        """The records of *names*, kept for the next picks when *names* is a
        tuple (what routing hands over). Under the lock."""
        records = self._records
        if not isinstance(names, tuple):
            return [records[n] for n in names]
        candidates = self._candidates.get(names)
        if candidates is None:
            candidates = [records[n] for n in names]
            if len(self._candidates) < 1024:
                self._candidates[names] = candidates
        self._last = (names, candidates)
        return candidates

    def _pick_among_unhealthy(self, names: Sequence[str]) -> Pick:
        """:meth:`pick` when some endpoint is not healthy (or the strategy is
        not keyed): half-open probes first, then the strategy among the
        healthy, else the wait until the first cool-down ends."""
        changes: list[StateChange] | None = None
        records = self._records
        with self._lock:
            now = -1.0  # read from the clock only when a record is not healthy
            healthy: list[Record] = []
            wait: float | None = None
            probe = False
            chosen: Record | None = None
            for name in names:
                record = records[name]
                state = record.state
                if state == HEALTHY:
                    healthy.append(record)
                    continue
                if now < 0:
                    now = self.clock()
                if state == COOLING and now >= record.until:
                    record.state = state = HALF_OPEN
                    changes = [StateChange(name, COOLING, HALF_OPEN, "cooled")]
                if state == HALF_OPEN and not record.probing:
                    record.probing = probe = True
                    chosen = record
                    break
                left = record.until - now if state == COOLING else PROBE_POLL
                wait = left if wait is None else min(wait, left)
            if chosen is None:
                if not healthy:
                    return Pick(None, wait if wait is not None else PROBE_POLL)
                if len(healthy) == 1:
                    chosen = healthy[0]
                elif self._keyed:  # a keyed strategy reads the records themselves
                    chosen = min(healthy, key=self._key)
                else:
                    chosen = self._choose(healthy)
            chosen.in_flight += 1
            chosen.share += 1
        if changes:
            self._report(changes)
        return Pick(chosen.name, 0.0, True) if probe else chosen.pick

    def _choose(self, healthy: list[Record]) -> Record:
        """A strategy's choice among *healthy* through views (under the lock)."""
        views = [
            EndpointView(r.name, r.weight, r.in_flight, r.share, r.latency, r.failing)
            for r in healthy
        ]
        return healthy[self.strategy(views)]

    def record(self, name: str, outcome: Outcome, *, probe: bool = False) -> None:
        """The attempt picked at *name* ended with *outcome*."""
        changes: list[StateChange] = []
        with self._lock:
            record = self._records[name]
            record.in_flight = max(0, record.in_flight - 1)
            self._count(record, outcome, changes, probe=probe)
        self._report(changes)

    def observe(self, name: str, outcome: Outcome) -> None:
        """An active check of *name* ended with *outcome* (no call was in
        flight): it counts like a call, and decides like a probe once the
        endpoint's cool-down is over."""
        changes: list[StateChange] = []
        with self._lock:
            record = self._records[name]
            if record.state == COOLING and self.clock() >= record.until:
                record.state = HALF_OPEN
                changes.append(StateChange(name, COOLING, HALF_OPEN, "cooled"))
            probe = record.state == HALF_OPEN and not record.probing
            if probe:
                record.probing = True
            self._count(record, outcome, changes, probe=probe)
        self._report(changes)

    def has_healthy(self, names: Sequence[str], *, besides: Sequence[str]) -> bool:
        """Whether an endpoint of *names* not in *besides* may take a call now."""
        with self._lock:
            now = self.clock()
            for name in names:
                if name in besides:
                    continue
                record = self._records[name]
                if record.state == HEALTHY or (not record.probing and now >= record.until):
                    return True
            return False

    def release(self, name: str, *, probe: bool = False) -> None:
        """The attempt picked at *name* ended without saying anything of the
        endpoint (the caller's error, an interrupt): it is no longer in
        flight, and a probe may go out again."""
        with self._lock:
            record = self._records[name]
            record.in_flight = max(0, record.in_flight - 1)
            if probe:
                record.probing = False

    def record_ok(self, name: str, latency: float, now: float | None = None) -> None:
        """The ordinary (not probe) attempt picked at *name* succeeded in
        *latency* seconds, at *now* (the book's clock; read when None): the
        common case of :meth:`record`, without building an Outcome."""
        record = self._records[name]  # the table itself never changes
        second = int(self.clock() if now is None else now)
        lock = self._lock
        lock.acquire()  # not ``with``, as in pick()
        try:
            if record.in_flight:
                record.in_flight -= 1
            old = record.latency
            record.latency = record.rank_latency = (
                latency if old is None else old + self._alpha * (latency - old)
            )
            record.failing = False
            record.consecutive = 0
            buckets = record.window.buckets
            if buckets and buckets[-1][0] == second:  # this second's bucket (Window.add)
                buckets[-1][1] += 1
            else:
                record.window.add(second, True)
        finally:
            lock.release()

    def _count(
        self, record: Record, outcome: Outcome, changes: list[StateChange], *, probe: bool
    ) -> None:
        """Fold *outcome* into *record* (under the lock)."""
        config = self.config
        now = self.clock()
        if outcome.latency is not None:
            old = record.latency
            alpha = config.latency_alpha
            record.latency = record.rank_latency = (
                outcome.latency if old is None else old + alpha * (outcome.latency - old)
            )
        if probe:
            record.probing = False
            if record.state != HALF_OPEN:  # cooled again meanwhile (e.g. from elsewhere)
                probe = False
        record.failing = not outcome.ok
        if outcome.ok:
            record.consecutive = 0
            record.window.add(now, True)
            if probe and record.state == HALF_OPEN:
                record.state, record.streak = HEALTHY, 0
                self._count_unhealthy(-1)
                record.window.clear()
                self._rejoin(record)
                name = record.endpoint.name
                changes.append(StateChange(name, HALF_OPEN, HEALTHY, "probe passed"))
            return
        record.failures += 1
        record.last_error = outcome.error
        if outcome.connection_failure:
            record.consecutive += 1
        record.window.add(now, False)
        if record.state == COOLING or (record.state == HALF_OPEN and not probe):
            if outcome.retry_after is not None:  # the server's word still extends it
                record.until = max(record.until, now + outcome.retry_after)
            return
        reason = self._cooldown_reason(record, outcome, now, probe=probe)
        if reason is not None:
            self._cool(record, now, reason, outcome.retry_after, changes)

    def _count_unhealthy(self, change: int) -> None:
        """One more (1) or one fewer (-1) endpoint not healthy (under the lock)."""
        self._unhealthy += change
        self._fast = not self._unhealthy and self._keyed

    def _rejoin(self, record: Record) -> None:
        """A recovered endpoint joins round-robin at its peers' level."""
        level = max(
            (r.share / r.endpoint.weight for r in self._records.values() if r is not record),
            default=0.0,
        )
        share = max(record.share, int(level * record.endpoint.weight))
        record.rejoined += share - record.share
        record.share = share

    def _cooldown_reason(
        self, record: Record, outcome: Outcome, now: float, *, probe: bool
    ) -> str | None:
        config = self.config
        if probe:
            return "probe failed"
        if outcome.retry_after is not None:
            return f"server asked to retry after {outcome.retry_after:g}s"
        if record.consecutive >= config.consecutive_failures:
            return f"{record.consecutive} connection failures in a row"
        calls, failed = record.window.counts(now - config.window)
        if calls >= config.min_calls and failed / calls >= config.failure_rate:
            return f"{failed} of {calls} calls failed in {config.window:g}s"
        return None

    def _cool(
        self,
        record: Record,
        now: float,
        reason: str,
        retry_after: float | None,
        changes: list[StateChange],
    ) -> None:
        config = self.config
        seconds = min(config.max_cooldown, config.cooldown * 2.0**record.streak)
        if retry_after is not None:
            seconds = max(seconds, retry_after)
        old = record.state
        if old == HEALTHY:
            self._count_unhealthy(1)
        record.state = COOLING
        record.until = max(record.until, now + seconds)
        record.streak += 1
        record.cooldowns += 1
        record.consecutive = 0
        record.window.clear()
        changes.append(StateChange(record.endpoint.name, old, COOLING, reason, seconds))

    def cool_until(self, name: str, until: float, reason: str) -> bool:
        """Cool *name* down until the monotonic instant *until* (a cool-down
        learnt elsewhere, e.g. from another process); never shortens one.
        True when it changed anything."""
        changes: list[StateChange] = []
        with self._lock:
            record = self._records[name]
            now = self.clock()
            if until <= max(record.until, now):
                return False
            old, record.until = record.state, until
            if old != COOLING:
                if old == HEALTHY:
                    self._count_unhealthy(1)
                record.state = COOLING
                record.probing = False
                changes.append(StateChange(name, old, COOLING, reason, until - now))
        self._report(changes)
        return True

    def cooling(self) -> dict[str, float]:
        """``{name: monotonic instant its cool-down ends}`` for every cooling endpoint."""
        with self._lock:
            return {n: r.until for n, r in self._records.items() if r.state == COOLING}

    def last_errors(self, names: Sequence[str]) -> dict[str, str | None]:
        """Each endpoint's last error (None: none yet)."""
        with self._lock:
            return {n: self._records[n].last_error for n in names}

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint: state, in flight, routed calls, failures, cool-downs,
        seconds of cool-down left, latency average (ms) and last error."""
        with self._lock:
            now = self.clock()
            return {
                name: {
                    "state": r.state,
                    "in_flight": r.in_flight,
                    "requests": r.share - r.rejoined,
                    "failures": r.failures,
                    "cooldowns": r.cooldowns,
                    "cooldown_left": max(0.0, r.until - now) if r.state == COOLING else 0.0,
                    "latency_ewma_ms": None if r.latency is None else r.latency * 1000.0,
                    "last_error": r.last_error,
                    "base_url": r.endpoint.base_url,
                }
                for name, r in self._records.items()
            }

    def _report(self, changes: list[StateChange]) -> None:
        if changes and self.on_change is not None:
            for change in changes:
                self.on_change(change)
