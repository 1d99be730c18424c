"""The health book: what a client knows of each endpoint of its group.

Per endpoint: its state (``healthy``, ``cooling``, ``half_open``), the
outcomes of the last ``window`` seconds, connection failures in a row, the
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
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from llmpool.endpoints.model import Endpoint, HealthConfig
from llmpool.endpoints.routing import EndpointView, Strategy
from llmpool.forking import renew_lock, reset_after_fork

__all__ = ["COOLING", "HALF_OPEN", "HEALTHY", "HealthBook", "Outcome", "Pick", "StateChange"]

HEALTHY = "healthy"
COOLING = "cooling"
HALF_OPEN = "half_open"

#: How long a pick waits when every candidate is half-open with its probe in flight.
PROBE_POLL = 0.05


@attrs.frozen
class Pick:
    """The answer of :meth:`HealthBook.pick`: an endpoint (*name*), or, when
    every candidate is cooling down, the seconds until the first may take a
    call (*wait*)."""

    name: str | None
    wait: float = 0.0
    probe: bool = False


@attrs.frozen
class Outcome:
    """How one attempt at an endpoint ended, as the health book counts it."""

    #: The endpoint answered as a working server would (a 4xx counts as working).
    ok: bool
    #: Seconds to the answer (None: not measured).
    latency: float | None = None
    #: The connection could not be opened or broke before any answer.
    connection_failure: bool = False
    #: The server asked to wait this long (429/503 ``Retry-After``).
    retry_after: float | None = None
    #: A short description of the error (type and message), for stats and errors.
    error: str | None = None


@attrs.frozen
class StateChange:
    """An endpoint changed state (reported to plugins and the log, once)."""

    endpoint: str
    old: str
    new: str
    reason: str
    #: Seconds of the cool-down that began (None for other changes).
    cooldown: float | None = None


class _Record:
    """One endpoint's state. Guarded by the book's lock."""

    __slots__ = (
        "consecutive",
        "cooldowns",
        "endpoint",
        "failing",
        "failures",
        "in_flight",
        "last_error",
        "latency",
        "outcomes",
        "probing",
        "routed",
        "state",
        "streak",
        "until",
    )

    def __init__(self, endpoint: Endpoint, max_window_calls: int) -> None:
        self.endpoint = endpoint
        self.state = HEALTHY
        self.outcomes: deque[tuple[float, bool]] = deque(maxlen=max_window_calls)
        self.consecutive = 0
        self.until = 0.0
        self.streak = 0
        self.probing = False
        self.in_flight = 0
        self.routed = 0
        self.failures = 0
        self.cooldowns = 0
        self.latency: float | None = None
        self.last_error: str | None = None
        self.failing = False


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
        self.strategy = strategy
        self.clock = clock
        self.on_change = on_change
        # Guards every _Record (microseconds; never across I/O or a callback).
        self._lock = threading.Lock()
        self._records = {e.name: _Record(e, config.max_window_calls) for e in endpoints}
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
        changes: list[StateChange] = []
        with self._lock:
            now = self.clock()
            records = [self._records[n] for n in names]
            healthy: list[_Record] = []
            wait: float | None = None
            for record in records:
                if record.state == COOLING and now >= record.until:
                    record.state = HALF_OPEN
                    changes.append(StateChange(record.endpoint.name, COOLING, HALF_OPEN, "cooled"))
                if record.state == HALF_OPEN and not record.probing:
                    record.probing = True
                    chosen, probe = record, True
                    break
                if record.state == HEALTHY:
                    healthy.append(record)
                elif record.state == COOLING:
                    left = record.until - now
                    wait = left if wait is None else min(wait, left)
                else:
                    wait = PROBE_POLL if wait is None else min(wait, PROBE_POLL)
            else:
                probe = False
                if not healthy:
                    return Pick(None, wait if wait is not None else PROBE_POLL)
                views = [
                    EndpointView(
                        r.endpoint.name,
                        r.endpoint.weight,
                        r.in_flight,
                        r.routed,
                        r.latency,
                        r.failing,
                    )
                    for r in healthy
                ]
                chosen = healthy[self.strategy(views)]
            chosen.in_flight += 1
            chosen.routed += 1
            name = chosen.endpoint.name
        self._report(changes)
        return Pick(name, 0.0, probe)

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

    def has_healthy(self, names: Sequence[str], *, besides: str | None) -> bool:
        """Whether an endpoint of *names* other than *besides* may take a call now."""
        with self._lock:
            now = self.clock()
            for name in names:
                record = self._records[name]
                if name == besides:
                    continue
                if record.state == HEALTHY or (
                    not record.probing and record.state != HEALTHY and now >= record.until
                ):
                    return True
            return False

    def _count(
        self, record: _Record, outcome: Outcome, changes: list[StateChange], *, probe: bool
    ) -> None:
        """Fold *outcome* into *record* (under the lock)."""
        config = self.config
        now = self.clock()
        if outcome.latency is not None:
            old = record.latency
            alpha = config.latency_alpha
            record.latency = (
                outcome.latency if old is None else old + alpha * (outcome.latency - old)
            )
        if probe:
            record.probing = False
            if record.state != HALF_OPEN:  # cooled again meanwhile (e.g. from elsewhere)
                probe = False
        record.failing = not outcome.ok
        if outcome.ok:
            record.consecutive = 0
            record.outcomes.append((now, True))
            if probe and record.state == HALF_OPEN:
                record.state, record.streak = HEALTHY, 0
                record.outcomes.clear()
                name = record.endpoint.name
                changes.append(StateChange(name, HALF_OPEN, HEALTHY, "probe passed"))
            return
        record.failures += 1
        record.last_error = outcome.error
        if outcome.connection_failure:
            record.consecutive += 1
        record.outcomes.append((now, False))
        if record.state == COOLING or (record.state == HALF_OPEN and not probe):
            if outcome.retry_after is not None:  # the server's word still extends it
                record.until = max(record.until, now + outcome.retry_after)
            return
        reason = self._cooldown_reason(record, outcome, now, probe=probe)
        if reason is not None:
            self._cool(record, now, reason, outcome.retry_after, changes)

    def _cooldown_reason(
        self, record: _Record, outcome: Outcome, now: float, *, probe: bool
    ) -> str | None:
        config = self.config
        if probe:
            return "probe failed"
        if outcome.retry_after is not None:
            return f"server asked to retry after {outcome.retry_after:g}s"
        if record.consecutive >= config.consecutive_failures:
            return f"{record.consecutive} connection failures in a row"
        horizon = now - config.window
        outcomes = record.outcomes
        while outcomes and outcomes[0][0] < horizon:
            outcomes.popleft()
        calls = len(outcomes)
        if calls >= config.min_calls:
            failed = sum(1 for _, ok in outcomes if not ok)
            if failed / calls >= config.failure_rate:
                return f"{failed} of {calls} calls failed in {config.window:g}s"
        return None

    def _cool(
        self,
        record: _Record,
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
        record.state = COOLING
        record.until = max(record.until, now + seconds)
        record.streak += 1
        record.cooldowns += 1
        record.consecutive = 0
        record.outcomes.clear()
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
                    "requests": r.routed,
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
