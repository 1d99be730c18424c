"""The pure retry policy: decisions, delays, Retry-After parsing and the deadline."""

from __future__ import annotations

import email.utils
import itertools
import pickle

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool import exceptions as exc
from llmpool.retry import (
    DEFAULT_RETRY_STATUSES,
    Deadline,
    RetryPolicy,
    get_header,
    next_delay,
    parse_retry_after,
    should_retry,
)

POLICY = RetryPolicy()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def status(code: int, retry_after: float | None = None) -> exc.APIStatusError:
    return exc.error_for_status(code, "x", retry_after=retry_after)


# --------------------------------------------------------------------------- policy value


def test_policy_defaults() -> None:
    """The defaults are the documented ones."""
    assert (POLICY.max_attempts, POLICY.base_delay, POLICY.max_delay) == (3, 0.5, 8.0)
    assert POLICY.max_retry_after == 60.0
    assert POLICY.retry_statuses == DEFAULT_RETRY_STATUSES
    assert POLICY.retry_statuses == {408, 409, 429, 500, 502, 503, 504, 529}
    assert POLICY.retry_read_timeout and POLICY.retry_connect_errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_attempts", 0),
        ("max_attempts", 2.5),
        ("max_attempts", True),
        ("base_delay", -1),
        ("max_delay", float("inf")),
        ("max_retry_after", "60"),
        ("retry_statuses", [200, 1000]),
        ("retry_statuses", "429"),
        ("retry_statuses", 429),
        ("retry_read_timeout", 1),
        ("retry_connect_errors", None),
    ],
)
def test_policy_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    """A bad policy value raises ConfigError naming the field."""
    with pytest.raises(exc.ConfigError) as info:
        RetryPolicy(**{field: value})  # type: ignore[arg-type]
    assert info.value.key == field
    assert field in str(info.value)


def test_policy_is_frozen_and_converts_statuses() -> None:
    """The policy is immutable, evolves with validation, and takes any iterable of statuses."""
    policy = RetryPolicy(retry_statuses=[429, 503])
    assert policy.retry_statuses == frozenset({429, 503})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert attrs.evolve(policy, max_attempts=5).max_attempts == 5
    with pytest.raises(exc.ConfigError):
        attrs.evolve(policy, max_attempts=0)


# --------------------------------------------------------------------------- should_retry


@pytest.mark.parametrize("code", sorted(DEFAULT_RETRY_STATUSES))
def test_retryable_statuses_are_retried(code: int) -> None:
    """Every status in retry_statuses is retried while attempts remain."""
    assert should_retry(POLICY, status(code), 1)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422, 418, 501, 505])
def test_final_statuses_are_never_retried(code: int) -> None:
    """Client errors and statuses outside retry_statuses are final."""
    assert not should_retry(POLICY, status(code), 1)


def test_retry_statuses_decide_not_the_class_flag() -> None:
    """The policy's status set is the authority: a 501 can be opted in, a 429 out."""
    assert should_retry(RetryPolicy(retry_statuses={501}), status(501), 1)
    assert not should_retry(RetryPolicy(retry_statuses={503}), status(429), 1)


def test_attempts_cap() -> None:
    """No retry once attempts_made reaches max_attempts."""
    policy = RetryPolicy(max_attempts=3)
    err = status(503)
    assert should_retry(policy, err, 1)
    assert should_retry(policy, err, 2)
    assert not should_retry(policy, err, 3)
    assert not should_retry(policy, err, 4)
    assert not should_retry(RetryPolicy(max_attempts=1), err, 1)


def test_retry_after_above_cap_is_not_retried() -> None:
    """A Retry-After longer than max_retry_after fails fast instead of a shorter wait."""
    policy = RetryPolicy(max_retry_after=10.0)
    assert should_retry(policy, status(429, retry_after=10.0), 1)
    assert not should_retry(policy, status(429, retry_after=10.5), 1)
    assert not should_retry(policy, status(503, retry_after=3600.0), 1)


@pytest.mark.parametrize(
    "cls", [exc.ConnectError, exc.ConnectTimeout, exc.ProtocolError, exc.PoolTimeout]
)
def test_connection_errors_are_retried(cls: type[exc.TransportError]) -> None:
    """Errors before the server saw the request are retried."""
    assert should_retry(POLICY, cls("x", url="http://h"), 1)


@pytest.mark.parametrize("cls", [exc.ConnectError, exc.ConnectTimeout, exc.ProtocolError])
def test_connection_errors_follow_the_switch(cls: type[exc.TransportError]) -> None:
    """retry_connect_errors=False makes connection errors final."""
    assert not should_retry(RetryPolicy(retry_connect_errors=False), cls("x"), 1)


def test_read_timeout_follows_the_switch() -> None:
    """A ReadTimeout (the POST may have run) is retried only when the policy allows it."""
    assert should_retry(POLICY, exc.ReadTimeout("x"), 1)
    assert not should_retry(RetryPolicy(retry_read_timeout=False), exc.ReadTimeout("x"), 1)
    assert should_retry(RetryPolicy(retry_connect_errors=False), exc.ReadTimeout("x"), 1)


def test_transport_instance_flag_can_veto() -> None:
    """A transport error whose instance says retryable=False (bytes arrived) is final."""
    err = exc.ProtocolError("reset after the response began")
    err.retryable = False
    assert not should_retry(POLICY, err, 1)


@pytest.mark.parametrize(
    "err",
    [
        exc.ConfigError("x"),
        exc.InvalidResponse("x", status_code=200, request_id=None, body=""),
        exc.ResponseTooLarge("x", status_code=200, request_id=None, body=""),
        exc.TLSError("x"),
        exc.PoolClosed("x"),
        exc.DeadlineExceeded("x", deadline=1.0, attempts=1, last_error=None),
        exc.PluginError("x", plugin="p", hook="h"),
        exc.PluginLoadError("x"),
        exc.MemoryPressureError("x"),
        ValueError("x"),
        KeyboardInterrupt(),
    ],
)
def test_everything_else_is_final(err: BaseException) -> None:
    """Configuration, invalid responses, TLS, closed pools, deadlines, plugins: never retried."""
    assert not should_retry(POLICY, err, 1)


@pytest.mark.parametrize("cls", [exc.StreamInterrupted, exc.IncompleteStream])
def test_undelivered_streams_are_retried_delivered_are_not(cls: type[exc.APIError]) -> None:
    """A broken stream is retried only when no chunk reached the caller."""
    assert should_retry(POLICY, cls("x", text="", delivered=False), 1)
    assert not should_retry(POLICY, cls("x", text="ab", delivered=True), 1)
    assert not should_retry(POLICY, cls("x", text="", delivered=False), 3)


def test_stream_error_needs_transient_type_and_nothing_delivered() -> None:
    """An error event is retried only when marked transient and undelivered."""
    err = exc.StreamError("overloaded", error_type="overloaded_error", delivered=False)
    assert not should_retry(POLICY, err, 1)  # the class default is not retryable
    err.retryable = True
    assert should_retry(POLICY, err, 1)
    err.delivered = True
    assert not should_retry(POLICY, err, 1)


def test_stream_error_without_delivered_attribute_counts_as_undelivered() -> None:
    """A stream error the client has not annotated yet is treated as undelivered."""
    err = exc.StreamInterrupted("x")
    assert should_retry(POLICY, err, 1)


# --------------------------------------------------------------------------- next_delay


def test_backoff_draws_between_half_and_all_of_the_doubling_ceiling() -> None:
    """rand()=0 gives half of base*2**(n-1), rand()=1 all of it, both capped by max_delay."""
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    attempts = range(1, 9)
    floors = [next_delay(policy, n, rand=lambda: 0.0) for n in attempts]
    ceilings = [next_delay(policy, n, rand=lambda: 1.0) for n in attempts]
    assert floors == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert next_delay(policy, 3, rand=lambda: 0.5) == pytest.approx(1.5)
    assert next_delay(policy, 10_000, rand=lambda: 0.0) == 8.0


def test_backoff_floor_meets_the_previous_ceiling_under_an_odd_cap() -> None:
    """With a cap between two doublings the floor is still the previous ceiling (no dip)."""
    policy = RetryPolicy(base_delay=1.0, max_delay=6.0)
    floors = [next_delay(policy, n, rand=lambda: 0.0) for n in range(1, 7)]
    ceilings = [next_delay(policy, n, rand=lambda: 1.0) for n in range(1, 7)]
    assert floors == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0]
    assert ceilings == [1.0, 2.0, 4.0, 6.0, 6.0, 6.0]
    assert next_delay(policy, 4, rand=lambda: 0.5) == pytest.approx(5.0)


@given(
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=100),
    draws=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=40),
)
def test_backoff_waits_never_shrink(base: float, cap: float, draws: list[float]) -> None:
    """Whatever rand() returns, each wait is at least the one before it."""
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    waits = [next_delay(policy, n, rand=lambda r=r: r) for n, r in enumerate(draws, start=1)]
    assert all(earlier <= later for earlier, later in itertools.pairwise(waits))


def test_retry_after_wins_over_jitter() -> None:
    """The server's retry_after is the delay, exactly, even when it exceeds max_delay."""
    assert next_delay(POLICY, 1, status(429, retry_after=12.0), rand=lambda: 0.0) == 12.0
    assert next_delay(POLICY, 1, status(429, retry_after=0.0), rand=lambda: 0.9) == 0.0


def test_error_without_retry_after_uses_jitter() -> None:
    """An error that carries no retry_after falls back to the jittered backoff."""
    assert next_delay(POLICY, 1, exc.ConnectError("x"), rand=lambda: 0.5) == pytest.approx(0.375)
    assert next_delay(POLICY, 1, status(503), rand=lambda: 0.5) == pytest.approx(0.375)


@given(
    attempts=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=100),
    r=st.floats(min_value=0, max_value=1),
)
def test_delay_always_within_zero_and_max_delay(
    attempts: int, base: float, cap: float, r: float
) -> None:
    """Without retry_after the delay is always in [0, max_delay]."""
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    delay = next_delay(policy, attempts, rand=lambda: r)
    assert 0.0 <= delay <= cap


# --------------------------------------------------------------------------- Retry-After


def test_retry_after_seconds_int_and_float() -> None:
    """Retry-After in seconds, integer or fractional."""
    assert parse_retry_after({"Retry-After": "5"}) == 5.0
    assert parse_retry_after({"retry-after": " 1.5 "}) == 1.5


def test_retry_after_ms_takes_precedence() -> None:
    """retry-after-ms is read first, in milliseconds."""
    headers = {"Retry-After": "5", "Retry-After-Ms": "250"}
    assert parse_retry_after(headers) == 0.25


def test_bad_retry_after_ms_falls_back_to_retry_after() -> None:
    """An unreadable retry-after-ms does not hide a readable Retry-After."""
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0


def test_retry_after_http_date_relative_to_now() -> None:
    """An HTTP date is converted to seconds from the injected now."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30.0)


def test_retry_after_in_the_past_is_zero() -> None:
    """A negative wait (a date in the past, a negative number) becomes 0."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "-3"}) == 0.0


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", "1e999", "1_0", "Mon, 99 Foo 20"])
def test_retry_after_garbage_is_none(value: str) -> None:
    """An unreadable Retry-After is ignored."""
    assert parse_retry_after({"Retry-After": value}, now=0.0) is None


def test_retry_after_absent_is_none() -> None:
    """No header, no wait."""
    assert parse_retry_after({}) is None
    assert parse_retry_after({"content-type": "application/json"}) is None


def test_get_header_any_case() -> None:
    """Header lookup ignores the case of the keys."""
    assert get_header({"X-Request-Id": "a"}, "x-request-id") == "a"
    assert get_header({"x-request-id": "b"}, "x-request-id") == "b"
    assert get_header({}, "x-request-id") is None


# --------------------------------------------------------------------------- deadline


def test_deadline_arithmetic_with_injected_clock() -> None:
    """remaining, expired, clamp and allows follow the injected clock."""
    clock = FakeClock(100.0)
    deadline = Deadline.after(10.0, clock=clock)
    assert deadline.remaining() == 10.0
    assert deadline.clamp(30.0) == 10.0
    assert deadline.clamp(3.0) == 3.0
    assert deadline.clamp(None) == 10.0
    assert deadline.allows(9.9)
    assert not deadline.allows(10.0)
    clock.now = 107.5
    assert deadline.remaining() == 2.5
    assert not deadline.expired()
    assert not deadline.allows(3.0)
    clock.now = 111.0
    assert deadline.remaining() == 0.0
    assert deadline.expired()
    assert deadline.clamp(5.0) == 0.0


def test_no_deadline() -> None:
    """Deadline.after(None) never expires, allows every delay and keeps timeouts."""
    deadline = Deadline.after(None, clock=FakeClock())
    assert deadline.remaining() is None
    assert not deadline.expired()
    assert deadline.allows(1e9)
    assert deadline.clamp(30.0) == 30.0
    assert deadline.clamp(None) is None


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "10", True])
def test_deadline_rejects_bad_values(value: object) -> None:
    """A deadline must be a finite number >= 0 (or None)."""
    with pytest.raises(exc.ConfigError) as info:
        Deadline.after(value)  # type: ignore[arg-type]
    assert info.value.key == "deadline"


def test_deadline_exceeded_error_carries_context() -> None:
    """The helper builds a DeadlineExceeded naming the budget, attempts and last error."""
    last = status(503)
    err = Deadline.after(2.0, clock=FakeClock()).exceeded(attempts=2, last_error=last)
    assert isinstance(err, exc.DeadlineExceeded)
    assert (err.deadline, err.attempts, err.last_error) == (2.0, 2, last)
    assert "2.0" in str(err) and "InternalServerError" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert back.attempts == 2


def test_zero_deadline_is_expired_at_once() -> None:
    """A zero budget is already spent."""
    assert Deadline.after(0, clock=FakeClock()).expired()
