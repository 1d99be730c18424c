"""HeaderSwap: a request built by one provider, sent by another of the same type."""

from __future__ import annotations

from llmpool.group import HeaderSwap

OLD = {"Authorization": "Bearer a", "X-Beta": "1", "Accept": "application/json"}
NEW = {"Authorization": "Bearer b", "Accept": "application/json", "X-Region": "eu"}


def test_the_providers_headers_are_swapped() -> None:
    swap = HeaderSwap(OLD, NEW)
    sent = swap.apply({**OLD, "Idempotency-Key": "k1"})
    assert sent == {
        "Authorization": "Bearer b",
        "Accept": "application/json",
        "X-Region": "eu",
        "Idempotency-Key": "k1",
    }
    assert not swap.none


def test_what_the_call_set_or_changed_wins() -> None:
    """A header the call changed keeps its value and spelling; one the call
    sent under another case is not doubled by the new provider's."""
    swap = HeaderSwap(OLD, NEW)
    call = {"authorization": "Bearer mine", "X-Beta": "2", "x-region": "us", "Accept": "*/*"}
    sent = swap.apply(call)
    assert sent == call
    assert sent is not call  # a new dict: the request's own headers are never changed


def test_the_same_headers_change_nothing() -> None:
    swap = HeaderSwap(OLD, dict(OLD))
    assert swap.none
    assert swap.apply(OLD) == OLD
