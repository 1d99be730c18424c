"""A 64-thread stress of an endpoint group over three real servers.

One endpoint refuses connections (a port bound then closed), one answers 503
for a while and then recovers (a MockLLMServer with scripted faults), one is
slow (a MockLLMServer with latency). Every call must succeed or raise a typed
error, the client's counters must agree with the health book's and with what
the servers saw, the recovered endpoint must get traffic back and the dead
one must be cooled down (and then only probed). Counts only, no wall time.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from doubles import refused_port

import llmpool
from llmpool.testing import MockLLMServer

THREADS = 64
#: Calls each worker makes at least, and at most (the loop stops once the
#: recovered endpoint has served RECOVERED_CALLS after its faults were spent).
MIN_CALLS = 6
MAX_CALLS = 200
#: 503 answers scripted on the flaky endpoint.
FAULTS = 12
RECOVERED_CALLS = 30
CONSECUTIVE_FAILURES = 3
MESSAGES = [{"role": "user", "content": "hi"}]


class Tally(llmpool.LLMPlugin):
    """Counts attempts, retries (by the error's type) and endpoint state changes."""

    name = "tally"

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the counters below
        self.attempts = 0
        self.retry_causes: Counter[str] = Counter()
        self.changes: list[Any] = []

    def on_attempt(self, ctx: Any, attempt: int) -> None:
        with self._lock:
            self.attempts += 1

    def on_retry(self, ctx: Any, attempt: int, error: Exception, delay: float) -> None:
        with self._lock:
            self.retry_causes[type(error).__name__] += 1

    def on_endpoint_state(self, change: Any) -> None:
        with self._lock:
            self.changes.append(change)


class Recovery:
    """When the flaky server's faults ran out, and whether it has served
    RECOVERED_CALLS requests since. Thread-safe."""

    def __init__(self, server: MockLLMServer) -> None:
        self._server = server
        self._lock = threading.Lock()  # guards spent_at
        self.spent_at: int | None = None
        self.done = threading.Event()

    def check(self) -> None:
        server = self._server
        with self._lock:
            if self.spent_at is None and not server.pending_faults:
                self.spent_at = server.request_count
            spent_at = self.spent_at
        if spent_at is not None and server.request_count >= spent_at + RECOVERED_CALLS:
            self.done.set()


@pytest.mark.slow
def test_sixty_four_threads_over_refusing_flaky_and_slow_endpoints() -> None:
    """Under 64 threads every call succeeds or raises a typed error, counters add up,
    the dead endpoint is cooled and then only probed, the recovered one gets traffic back."""
    tally = Tally()
    health = llmpool.HealthConfig(
        cooldown=0.1,
        max_cooldown=0.2,
        consecutive_failures=CONSECUTIVE_FAILURES,
        min_calls=5,
        failure_rate=0.5,
    )
    with (
        MockLLMServer() as flaky,
        MockLLMServer(latency=0.05) as slow,
    ):
        flaky.inject("status=503", count=FAULTS)
        endpoints = [
            llmpool.Endpoint(
                name="dead", base_url=f"http://127.0.0.1:{refused_port()}/v1", api_key="sk-d"
            ),
            llmpool.Endpoint(name="flaky", base_url=flaky.base_url, api_key="sk-f"),
            llmpool.Endpoint(name="slow", base_url=slow.base_url, api_key="sk-s"),
        ]
        recovery = Recovery(flaky)
        outcomes: Counter[str] = Counter()
        answered_by: Counter[str | None] = Counter()
        lock = threading.Lock()  # guards outcomes and answered_by

        with llmpool.Client(
            endpoints=endpoints,
            health=health,
            deadline=5.0,
            timeout=5.0,
            retry=llmpool.RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05),
            pool=llmpool.PoolConfig(max_connections=THREADS, max_keepalive=THREADS),
            plugins=[tally],
        ) as client:

            def worker() -> None:
                for index in range(MAX_CALLS):
                    if index >= MIN_CALLS and recovery.done.is_set():
                        return
                    try:
                        result = client.chat(model="mock-model", messages=MESSAGES)
                    except llmpool.LLMPoolError as err:  # anything else fails .result()
                        with lock:
                            outcomes[type(err).__name__] += 1
                    else:
                        assert result.text
                        with lock:
                            outcomes["ok"] += 1
                            answered_by[result.endpoint] += 1
                    recovery.check()

            with ThreadPoolExecutor(max_workers=THREADS) as executor:
                futures = [executor.submit(worker) for _ in range(THREADS)]
                for future in futures:
                    future.result()

            stats = client.stats()

        counters, per = stats["client"], stats["endpoints"]
        successes = outcomes["ok"]
        errors = sum(n for kind, n in outcomes.items() if kind != "ok")
        # Every call is counted once, as a success or a typed error.
        assert counters["calls"] == successes + errors
        assert counters["errors"] == errors
        assert counters["errors_by_type"] == {k: n for k, n in outcomes.items() if k != "ok"}
        # Every attempt but a call's first follows a retry.
        assert tally.attempts == counters["calls"] + counters["retries"]
        assert sum(tally.retry_causes.values()) == counters["retries"]
        # Each success is one attempt that ended well at one endpoint, and says which.
        assert sum(r["requests"] - r["failures"] for r in per.values()) == successes
        assert sum(answered_by.values()) == successes
        assert answered_by["dead"] == 0
        assert all(r["in_flight"] == 0 for r in per.values())

        # What the servers saw is what the book routed to them.
        assert per["flaky"]["requests"] == flaky.request_count
        assert per["slow"]["requests"] == slow.request_count
        assert per["slow"]["failures"] == 0
        assert per["flaky"]["failures"] == FAULTS  # each 503, never a success
        assert not flaky.pending_faults

        # The dead endpoint: every request failed, it cooled down, and after the
        # first cool-down it got one probe per cool-down, no more.
        dead = per["dead"]
        assert dead["requests"] == dead["failures"]
        assert dead["cooldowns"] >= 1
        assert dead["requests"] <= CONSECUTIVE_FAILURES + (THREADS - 1) + (dead["cooldowns"] - 1)
        assert dead["last_error"].startswith("ConnectError")
        cooled = [c for c in tally.changes if c.endpoint == "dead" and c.new == "cooling"]
        assert len(cooled) == dead["cooldowns"]

        # The flaky endpoint cooled down, then got traffic back once its faults ran out.
        assert per["flaky"]["cooldowns"] >= 1
        assert recovery.spent_at is not None
        assert recovery.done.is_set()
        assert flaky.request_count >= recovery.spent_at + RECOVERED_CALLS
        assert per["flaky"]["state"] == "healthy"
        assert answered_by["flaky"] == flaky.request_count - FAULTS
