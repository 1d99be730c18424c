"""Fault values, their text form, and how the injector chooses them (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool.exceptions import ConfigError
from llmpool.testing import Fault, FaultKind, MockSettings, parse_fault, parse_faults
from llmpool.testing.injection import FaultInjector

CANONICAL = [
    (Fault.status(429, retry_after=2), "status=429,retry_after=2"),
    (
        Fault.status(429, retry_after=1.5, retry_after_ms=1500),
        "status=429,retry_after=1.5,retry_after_ms=1500",
    ),
    (Fault.status(503, retry_after=3, http_date=True), "status=503,retry_after=3,http_date"),
    (
        Fault.status(500, delay=0.5, message="boom, again"),
        "status=500,delay=0.5,message=boom, again",
    ),
    (Fault.delay(0.25), "delay=0.25"),
    (Fault.reset(), "reset"),
    (Fault.drop(delay=1), "drop,delay=1"),
    (Fault.close_after_headers(), "close_after_headers"),
    (Fault.close_after_response(), "close_after_response"),
    (Fault.stream_disconnect(after_chunks=2), "disconnect=2"),
    (Fault.stream_truncate(after_chunks=0), "truncate=0"),
    (Fault.malformed_chunk(after_chunks=3), "malformed=3"),
    (Fault.stall(after_chunks=1), "stall=1"),
    (Fault.stream_disconnect(3, delay=0.5), "disconnect=3,delay=0.5"),
    (Fault.oversized(10, delay=2), "oversized=10,delay=2"),
    (Fault.stream_error(after_chunks=2, message="busy"), "stream_error=2,message=busy"),
    (Fault.oversized(size=1000), "oversized=1000"),
]


@pytest.mark.parametrize(("fault", "text"), CANONICAL)
def test_constructors_have_a_canonical_text_form(fault: Fault, text: str) -> None:
    """Each constructor's str() is its canonical spec, and parsing it gives the fault back."""
    assert str(fault) == text
    assert Fault.parse(text) == fault


def test_bare_stream_kinds_use_defaults() -> None:
    """disconnect, stall, ... without a number mean one chunk; oversized means 1 MiB."""
    assert parse_fault("disconnect") == Fault.stream_disconnect(after_chunks=1)
    assert parse_fault(" STALL ") == Fault.stall(after_chunks=1)
    assert parse_fault("oversized").size == 1024 * 1024


def test_delay_modifies_any_kind() -> None:
    """delay=S next to a kind is a pause before that fault, in any order."""
    assert parse_fault("delay=2,reset") == Fault.reset(delay=2)
    assert parse_fault("disconnect=1,delay=0.5").delay_seconds == 0.5


def test_parse_faults_splits_on_semicolons() -> None:
    """Several specs separated by ';' parse in order; blanks are skipped."""
    assert parse_faults(" status=500 ; ;reset;") == (Fault.status(500), Fault.reset())
    assert parse_faults("") == ()


@pytest.mark.parametrize(
    "text",
    [
        "explode",
        "status",
        "status=abc",
        "status=200",
        "status=600",
        "reset,disconnect=1",
        "retry_after=2",
        "reset,retry_after=2",
        "status=429,http_date",
        "reset,message=x",
        "disconnect=-1",
        "delay=-1",
        "delay=nan",
        "reset=3",
        "status=500,bogus,message=x",
    ],
)
def test_bad_specs_raise_config_error(text: str) -> None:
    """A spec that does not make sense raises ConfigError, never a bare exception."""
    with pytest.raises(ConfigError):
        parse_fault(text)


def test_fault_validates_direct_construction() -> None:
    """Building a Fault directly is validated the same way as parsing."""
    with pytest.raises(ConfigError):
        Fault(kind=FaultKind.STATUS)
    with pytest.raises(ConfigError):
        Fault.status(404, http_date=True)


faults = st.one_of(
    st.builds(
        Fault.status,
        st.integers(400, 599),
        retry_after=st.none() | st.floats(0, 1e6, allow_nan=False),
        retry_after_ms=st.none() | st.integers(0, 10**7),
        message=st.none() | st.text(st.characters(exclude_characters=";\x00"), max_size=20),
        delay=st.floats(0, 100),
    ),
    st.builds(Fault.delay, st.floats(0, 100)),
    st.builds(Fault.reset, delay=st.floats(0, 100)),
    st.builds(Fault.drop),
    st.builds(Fault.stream_disconnect, st.integers(0, 100)),
    st.builds(Fault.malformed_chunk, st.integers(0, 100)),
    st.builds(Fault.stall, st.integers(0, 100)),
    st.builds(Fault.oversized, st.integers(0, 10**9)),
)


@given(st.lists(faults, max_size=4))
def test_text_form_round_trips(values: list[Fault]) -> None:
    """For any faults, parse_faults of their ';'-joined text gives them back."""
    text = ";".join(str(f) for f in values)
    assert parse_faults(text) == tuple(values)


def test_message_keeps_commas_and_spaces() -> None:
    """message= takes the rest of the item verbatim."""
    assert parse_fault("status=500,message= a, b ").message == " a, b "


def test_injector_precedence_header_queue_random() -> None:
    """The header wins without consuming the queue; the queue is FIFO; then chance."""
    settings = MockSettings(fault_rate=1.0, random_faults=[Fault.reset()])
    injector = FaultInjector(seed=1)
    injector.inject([Fault.status(500), Fault.status(503)])
    assert injector.choose("status=418", settings) == Fault.status(418)
    assert injector.choose(None, settings) == Fault.status(500)
    assert injector.choose(None, settings) == Fault.status(503)
    assert injector.pending() == ()
    assert injector.choose(None, settings) == Fault.reset()
    assert injector.choose(None, MockSettings()) is None


def test_injector_bad_header_becomes_a_400() -> None:
    """A header that does not parse is answered with a 400 fault explaining why."""
    fault = FaultInjector(seed=None).choose("nonsense", MockSettings())
    assert fault is not None
    assert fault.status_code == 400
    assert "x-mock-fault" in (fault.message or "")


def test_injector_seed_reproduces_and_reseed_restarts() -> None:
    """The same seed draws the same faults; reseed() starts the sequence again."""
    settings = MockSettings(fault_rate=0.5, random_faults="status=500;reset")
    first = FaultInjector(seed=42)
    run = [first.choose(None, settings) for _ in range(50)]
    second = FaultInjector(seed=42)
    assert [second.choose(None, settings) for _ in range(50)] == run
    first.reseed(42)
    assert [first.choose(None, settings) for _ in range(50)] == run
    assert {None, Fault.status(500), Fault.reset()} == set(run)
