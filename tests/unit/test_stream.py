"""Stream over an already-open response: no I/O in the constructor, reopen on an early failure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmpool.exceptions import LLMPoolError, StreamInterrupted
from llmpool.models import CallContext
from llmpool.providers.openai import OpenAIProvider
from llmpool.streaming import Stream

EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'


class FakeBody:
    """A response that records whether its body was read."""

    def __init__(self, pieces: list[bytes], fail: bool = False) -> None:
        self.status = 200
        self.headers = {"x-request-id": "r1"}
        self.pieces = pieces
        self.fail = fail
        self.reads = 0
        self.closed = False

    def iter_bytes(self) -> Iterator[bytes]:
        self.reads += 1
        if self.fail:
            raise StreamInterrupted("dropped before any chunk")
        yield from self.pieces

    def close(self) -> None:
        self.closed = True


def _stream(response: FakeBody, reopen: Any) -> Stream:
    return Stream(
        ctx=CallContext(operation="chat", model="m", provider="openai"),
        request=None,
        provider=OpenAIProvider(),
        response=response,
        reopen=reopen,
    )


def test_constructor_reads_nothing() -> None:
    """Building a Stream reads no byte; iterating it does."""
    body = FakeBody([EVENT, b"data: [DONE]\n\n"])
    stream = _stream(body, reopen=lambda err: None)
    assert body.reads == 0 and stream.request_id == "r1"
    assert "".join(chunk.delta for chunk in stream) == "hi"
    assert body.reads == 1 and stream.closed


def test_early_failure_reopens_through_the_callback() -> None:
    """A failure before any chunk asks reopen() for the next response and reads that one."""
    second = FakeBody([EVENT, b"data: [DONE]\n\n"])
    seen: list[LLMPoolError] = []

    def reopen(err: LLMPoolError) -> FakeBody:
        seen.append(err)
        return second

    first = FakeBody([], fail=True)
    with _stream(first, reopen) as stream:
        assert "".join(chunk.delta for chunk in stream) == "hi"
    assert len(seen) == 1 and isinstance(seen[0], StreamInterrupted)
    assert first.closed and second.reads == 1
