"""The health book: cool-downs, their growth and extension, probes, in-flight counts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmpool.endpoints import COOLING, HALF_OPEN, HEALTHY, Endpoint, HealthBook, HealthConfig
from llmpool.endpoints.health import Outcome, StateChange
from llmpool.endpoints.routing import default, round_robin

FAIL = Outcome(ok=False, error="InternalServerError: 503")
REFUSED = Outcome(ok=False, connection_failure=True, error="ConnectError: refused")
OK = Outcome(ok=True, latency=0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def book_of(
    names: tuple[str, ...] = ("a", "b"), **config: object
) -> tuple[HealthBook, Clock, list[StateChange]]:
    clock = Clock()
    changes: list[StateChange] = []
    endpoints = [Endpoint(name=n, base_url=f"http://{n}.test/v1") for n in names]
    book = HealthBook(
        endpoints,
        HealthConfig(**config),  # type: ignore[arg-type]
        default,
        clock=clock,
        on_change=changes.append,
    )
    return book, clock, changes


def fail(book: HealthBook, name: str, outcome: Outcome = FAIL) -> None:
    pick = book.pick([name])
    assert pick.name == name
    book.record(name, outcome, probe=pick.probe)


def test_failure_rate_over_the_window_cools_the_endpoint() -> None:
    """Half the calls of the window failing (with enough calls) starts a cool-down."""
    book, _, changes = book_of(min_calls=4, failure_rate=0.5, cooldown=5.0)
    for outcome in (OK, FAIL, OK):
        book.record(book.pick(["a"]).name or "", outcome)
    assert book.stats()["a"]["state"] == HEALTHY
    fail(book, "a")
    assert book.stats()["a"]["state"] == COOLING
    assert [(c.endpoint, c.old, c.new) for c in changes] == [("a", HEALTHY, COOLING)]
    assert changes[0].cooldown == 5.0


def test_old_failures_leave_the_window() -> None:
    """Failures older than the window no longer count toward the rate."""
    book2, clock2, _ = book_of(min_calls=3, failure_rate=0.5, window=10.0)
    fail(book2, "a")
    fail(book2, "a")
    clock2.now += 11
    book2.record(book2.pick(["a"]).name or "", OK)
    book2.record(book2.pick(["a"]).name or "", OK)
    fail(book2, "a")  # window: ok, ok, fail: 1 of 3 (with the old two it would be 3 of 5)
    assert book2.stats()["a"]["state"] == HEALTHY


def test_consecutive_connection_failures_cool_the_endpoint() -> None:
    """N connection failures in a row cool an endpoint down before the rate has enough calls."""
    book, _, _ = book_of(min_calls=100, consecutive_failures=3)
    fail(book, "a", REFUSED)
    fail(book, "a", REFUSED)
    assert book.stats()["a"]["state"] == HEALTHY
    fail(book, "a", REFUSED)
    assert book.stats()["a"]["state"] == COOLING


def test_a_success_resets_the_connection_failure_run() -> None:
    """A success between connection failures starts their count again."""
    book, _, _ = book_of(min_calls=100, consecutive_failures=2)
    fail(book, "a", REFUSED)
    book.record(book.pick(["a"]).name or "", OK)
    fail(book, "a", REFUSED)
    assert book.stats()["a"]["state"] == HEALTHY


def test_cooldown_grows_per_repeat_and_resets_after_a_passed_probe() -> None:
    """The n-th cool-down in a row lasts cooldown * 2**(n-1); a passed probe resets the growth."""
    book, clock, changes = book_of(("a",), consecutive_failures=1, cooldown=1.0, max_cooldown=3.0)
    fail(book, "a", REFUSED)
    lengths = [changes[-1].cooldown]
    for _ in range(3):
        clock.now += 10
        pick = book.pick(["a"])
        assert pick.probe
        book.record("a", REFUSED, probe=True)
        lengths.append(changes[-1].cooldown)
    assert lengths == [1.0, 2.0, 3.0, 3.0]  # capped by max_cooldown
    clock.now += 10
    pick = book.pick(["a"])
    book.record("a", OK, probe=pick.probe)
    assert book.stats()["a"]["state"] == HEALTHY
    fail(book, "a", REFUSED)
    assert changes[-1].cooldown == 1.0


def test_a_longer_retry_after_extends_and_never_shortens() -> None:
    """A later, longer cool-down extends an earlier one; a shorter one leaves it."""
    book, clock, _ = book_of(("a",), cooldown=1.0)
    pick1, pick2, pick3 = book.pick(["a"]), book.pick(["a"]), book.pick(["a"])
    assert pick1.name == pick2.name == pick3.name == "a"
    book.record("a", Outcome(ok=False, retry_after=10.0, error="RateLimitError: 429"))
    assert book.stats()["a"]["cooldown_left"] == pytest.approx(10.0)
    book.record("a", Outcome(ok=False, retry_after=30.0, error="RateLimitError: 429"))
    assert book.stats()["a"]["cooldown_left"] == pytest.approx(30.0)
    book.record("a", Outcome(ok=False, retry_after=2.0, error="RateLimitError: 429"))
    assert book.stats()["a"]["cooldown_left"] == pytest.approx(30.0)
    book.cool_until("a", clock.now + 5.0, "shared")
    assert book.stats()["a"]["cooldown_left"] == pytest.approx(30.0)
    book.cool_until("a", clock.now + 50.0, "shared")
    assert book.stats()["a"]["cooldown_left"] == pytest.approx(50.0)


def test_failures_in_flight_when_it_cooled_add_no_cool_down() -> None:
    """Sixteen calls in flight failing at once are one cool-down, not sixteen."""
    book, _, changes = book_of(("a",), consecutive_failures=1)
    picks = [book.pick(["a"]) for _ in range(16)]
    for pick in picks:
        book.record("a", REFUSED, probe=pick.probe)
    stats = book.stats()["a"]
    assert stats["cooldowns"] == 1
    assert stats["failures"] == 16
    assert stats["in_flight"] == 0
    assert len(changes) == 1


def test_retry_after_cools_at_least_that_long_for_that_endpoint_alone() -> None:
    """A 429 with Retry-After cools its endpoint for at least that long; the other stays healthy."""
    book, _, _ = book_of(cooldown=1.0)
    book.pick(["a"])
    book.record("a", Outcome(ok=False, retry_after=7.0, error="RateLimitError: 429"))
    stats = book.stats()
    assert stats["a"]["state"] == COOLING
    assert stats["a"]["cooldown_left"] == pytest.approx(7.0)
    assert stats["b"]["state"] == HEALTHY
    assert book.pick(["a", "b"]).name == "b"


def test_after_the_cool_down_one_probe_decides() -> None:
    """Once cooled, one call probes; the others wait for its verdict."""
    book, clock, changes = book_of(("a",), consecutive_failures=1, cooldown=1.0)
    fail(book, "a", REFUSED)
    assert book.pick(["a"]).name is None
    clock.now += 1.5
    probe = book.pick(["a"])
    assert probe.name == "a" and probe.probe
    waiting = book.pick(["a"])
    assert waiting.name is None and waiting.wait > 0  # the probe is out
    book.record("a", OK, probe=True)
    assert book.stats()["a"]["state"] == HEALTHY
    assert [c.new for c in changes] == [COOLING, HALF_OPEN, HEALTHY]


def test_a_half_open_endpoint_is_probed_before_healthy_ones() -> None:
    """A recovered endpoint gets the next call as its probe, so traffic returns to it."""
    book, clock, _ = book_of(("a", "b"), consecutive_failures=1, cooldown=1.0)
    fail(book, "a", REFUSED)
    assert book.pick(["a", "b"]).name == "b"
    clock.now += 2
    pick = book.pick(["a", "b"])
    assert pick.name == "a" and pick.probe


def test_every_candidate_cooling_gives_the_wait_for_the_first() -> None:
    """When every candidate cools, pick says how long until the first comes back."""
    book, _, _ = book_of(("a", "b"), consecutive_failures=1, cooldown=1.0)
    fail(book, "a", REFUSED)
    book.cool_until("b", book.clock() + 4.0, "test")
    pick = book.pick(["a", "b"])
    assert pick.name is None
    assert pick.wait == pytest.approx(1.0)


def test_active_checks_count_and_decide_like_a_probe() -> None:
    """An active check's failure counts; once cooled, a passing check makes it healthy."""
    book, clock, _ = book_of(("a",), consecutive_failures=2, cooldown=1.0)
    book.observe("a", REFUSED)
    book.observe("a", REFUSED)
    assert book.stats()["a"]["state"] == COOLING
    book.observe("a", OK)  # still cooling: a check does not shorten it
    assert book.stats()["a"]["state"] == COOLING
    clock.now += 2
    book.observe("a", OK)
    assert book.stats()["a"]["state"] == HEALTHY
    assert book.stats()["a"]["in_flight"] == 0


def test_latency_is_an_exponential_average() -> None:
    """Each measured latency moves the average by alpha of the difference."""
    book, _, _ = book_of(("a",), latency_alpha=0.5)
    for latency in (0.1, 0.3):
        book.pick(["a"])
        book.record("a", Outcome(ok=True, latency=latency))
    assert book.stats()["a"]["latency_ewma_ms"] == pytest.approx(200.0)


def test_weighted_round_robin_follows_the_weights() -> None:
    """Under round_robin a 3:1 weighting routes three calls of four to the heavier endpoint."""
    endpoints = [
        Endpoint(name="a", base_url="http://a.test/v1", weight=3),
        Endpoint(name="b", base_url="http://b.test/v1", weight=1),
    ]
    book = HealthBook(endpoints, HealthConfig(), round_robin)
    order = []
    for _ in range(8):
        name = book.pick(["a", "b"]).name or ""
        order.append(name)
        book.record(name, OK)
    assert order.count("a") == 6 and order.count("b") == 2


def test_in_flight_counts_stay_exact_under_threads() -> None:
    """32 threads picking and recording leave in-flight at zero and requests exact."""
    book, _, _ = book_of(("a", "b", "c"))
    barrier = threading.Barrier(32)

    def work() -> None:
        barrier.wait()
        for _ in range(200):
            pick = book.pick(["a", "b", "c"])
            book.record(pick.name or "", OK, probe=pick.probe)

    with ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(work) for _ in range(32)]:
            future.result()
    stats = book.stats()
    assert sum(s["requests"] for s in stats.values()) == 32 * 200
    assert all(s["in_flight"] == 0 for s in stats.values())


def test_round_robin_does_not_flood_a_recovered_endpoint() -> None:
    """After a cool-down, round_robin shares calls by weight again instead of catching up."""
    clock = Clock()
    endpoints = [Endpoint(name=n, base_url=f"http://{n}.test/v1") for n in "ab"]
    book = HealthBook(
        endpoints, HealthConfig(cooldown=1, consecutive_failures=1), round_robin, clock=clock
    )
    fail(book, "a", REFUSED)
    for _ in range(100):
        book.record(book.pick(["a", "b"]).name or "", OK)
    clock.now += 5
    order = []
    for _ in range(20):
        pick = book.pick(["a", "b"])
        order.append(pick.name)
        book.record(pick.name or "", OK, probe=pick.probe)
    assert 9 <= order.count("a") <= 11, order
    assert book.stats()["b"]["requests"] == 100 + order.count("b")  # stats stay exact


def test_release_frees_an_endpoint_without_judging_it() -> None:
    """An attempt that ended through no fault of the endpoint frees its probe and slot."""
    book, clock, _ = book_of(("a",), consecutive_failures=1, cooldown=1.0)
    fail(book, "a", REFUSED)
    clock.now += 2
    probe = book.pick(["a"])
    assert probe.probe
    book.release("a", probe=True)
    again = book.pick(["a"])
    assert again.name == "a" and again.probe  # a probe may go out again
    assert book.stats()["a"]["failures"] == 1 and book.stats()["a"]["state"] == "half_open"


def test_the_short_way_is_taken_only_while_every_endpoint_is_healthy() -> None:
    """The book's count of unhealthy endpoints follows every change of state
    (cool-down, shared cool-down, half-open, probe passed), so a pick takes
    the short way exactly when every endpoint is healthy and still chooses
    as the full way would."""
    book, clock, _ = book_of(("a", "b", "c"), consecutive_failures=1, cooldown=1.0)

    def unhealthy() -> int:
        return sum(r.state != HEALTHY for r in book._records.values())

    names = ("a", "b", "c")
    steps = [
        lambda: book.record(book.pick(names).name or "", REFUSED),
        lambda: book.cool_until("b", clock.now + 2.0, "shared"),
        lambda: book.cool_until("a", clock.now + 3.0, "shared"),  # a cooling one, extended
        lambda: setattr(clock, "now", clock.now + 5.0),
    ]
    for step in steps:
        step()
        assert book._unhealthy == unhealthy() and book._fast == (not unhealthy())
    for _ in range(6):  # probes pass, one endpoint at a time
        pick = book.pick(names)
        assert pick.name is not None
        book.record(pick.name, OK, probe=pick.probe)
        assert book._unhealthy == unhealthy() and book._fast == (not unhealthy())
    assert unhealthy() == 0
    assert all(r.in_flight == 0 for r in book._records.values())
    pick = book.pick(names)  # the short way again: the cached pick of a healthy endpoint
    assert pick is book._records[pick.name or ""].pick and not pick.probe
