"""The mock server's plans: what bytes, pauses and closes answer a request (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmpool.exceptions import ConfigError
from llmpool.testing import Fault, MockSettings
from llmpool.testing.bodies import count_tokens, split_chunks, split_pieces
from llmpool.testing.exchange import Close, Pause, Send, Stall, Step, plan
from llmpool.testing.http11 import HttpRequest, chunk
from llmpool.testing.openai_bodies import vector
from llmpool.testing.routes import make_reply

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def request(payload: Any = CHAT, version: str = "HTTP/1.1") -> HttpRequest:
    return HttpRequest(
        method="POST",
        target="/v1/chat/completions",
        version=version,
        headers={},
        body=json.dumps(payload).encode(),
    )


def sent(steps: list[Step]) -> bytes:
    return b"".join(s.data for s in steps if isinstance(s, Send))


def test_json_answer_is_one_send_with_its_length() -> None:
    """A normal JSON answer is a single write whose Content-Length matches the body."""
    steps = plan(request(), MockSettings(), None, keep_alive=True)
    assert len(steps) == 1
    head, _, body = sent(steps).partition(b"\r\n\r\n")
    assert f"content-length: {len(body)}".encode() in head
    assert b"connection: close" not in head


def test_latency_and_fault_delay_come_first_in_order() -> None:
    """The latency setting, then the fault's delay, then the answer."""
    steps = plan(request(), MockSettings(latency=0.5), Fault.delay(2), keep_alive=True)
    assert steps[:2] == [Pause(0.5), Pause(2)]
    assert isinstance(steps[2], Send)


def test_reset_and_drop_send_nothing() -> None:
    """reset is an RST close, drop a FIN close; neither writes a byte."""
    assert plan(request(), MockSettings(), Fault.reset(), keep_alive=True) == [Close(reset=True)]
    assert plan(request(), MockSettings(), Fault.drop(), keep_alive=True) == [Close()]


def test_no_keep_alive_says_close_and_closes() -> None:
    """Without keep-alive the answer carries Connection: close and the plan closes."""
    steps = plan(request(), MockSettings(), None, keep_alive=False)
    assert b"connection: close" in sent(steps)
    assert steps[-1] == Close()


def test_close_after_response_closes_without_saying_so() -> None:
    """close_after_response closes after a normal answer that does not announce it."""
    steps = plan(request(), MockSettings(), Fault.close_after_response(), keep_alive=True)
    assert steps[-1] == Close()
    assert b"connection: close" not in sent(steps)


def test_chunk_latency_paces_each_event() -> None:
    """With chunk_latency, the head goes first and a pause precedes every event."""
    payload = {**CHAT, "stream": True}
    steps = plan(request(payload), MockSettings(chunk_latency=0.1), None, keep_alive=True)
    assert isinstance(steps[0], Send)
    assert steps[1] == Pause(0.1)
    events = 1 + 5 + 2  # role chunk, five words, finish chunk, [DONE]
    assert steps.count(Pause(0.1)) == events
    assert steps[-1] == Send(b"0\r\n\r\n")


def test_http10_stream_is_close_delimited() -> None:
    """An HTTP/1.0 client gets the stream without chunked coding, ended by a close."""
    payload = {**CHAT, "stream": True}
    steps = plan(request(payload, "HTTP/1.0"), MockSettings(), None, keep_alive=True)
    data = sent(steps)
    assert b"transfer-encoding" not in data
    assert data.endswith(b"data: [DONE]\n\n")
    assert steps[-1] == Close()


def test_stream_disconnect_and_stall_plans() -> None:
    """disconnect ends in a close without terminator; stall waits, then closes."""
    payload = {**CHAT, "stream": True}
    disconnect = plan(request(payload), MockSettings(), Fault.stream_disconnect(1), keep_alive=True)
    assert disconnect[-1] == Close()
    assert not sent(disconnect).endswith(b"0\r\n\r\n")
    stall = plan(request(payload), MockSettings(), Fault.stall(1), keep_alive=True)
    assert stall[-2:] == [Stall(), Close()]


def test_chunk_framing() -> None:
    """A chunk is hex size, CRLF, data, CRLF; empty data frames to nothing (not a terminator)."""
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    assert chunk(b"") == b""


@given(st.text(max_size=60))
def test_split_pieces_rejoins(text: str) -> None:
    """Splitting a reply into word pieces loses nothing."""
    assert "".join(split_pieces(text)) == text


@given(st.text(max_size=60), st.integers(1, 10))
def test_split_chunks_rejoins_in_at_most_n(text: str, count: int) -> None:
    """N chunks rejoin to the text and are never more than N."""
    chunks = split_chunks(text, count)
    assert "".join(chunks) == text
    assert len(chunks) <= count


def test_tokens_are_words() -> None:
    """The mock counts one token per word."""
    assert count_tokens("  one two\nthree ") == 3
    assert split_chunks("Hello from the mock server.", None) == [
        "Hello",
        " from",
        " the",
        " mock",
        " server.",
    ]


def test_vectors_are_deterministic_unit_vectors() -> None:
    """The same text gives the same unit vector; another text another one."""
    first = vector("abc", 64)
    assert first == vector("abc", 64)
    assert first != vector("abd", 64)
    assert len(first) == 64
    assert sum(x * x for x in first) == pytest.approx(1.0, abs=1e-4)


def test_make_reply_echo_cut_and_tool() -> None:
    """make_reply echoes, cuts at max_tokens with "length", and calls a tool when offered."""
    settings = MockSettings(echo=True, tool_call="f", tool_arguments={"a": 1})
    echo = make_reply(settings, ["x y"], "one two three", 2, tools=False, tool_prefix="call_")
    assert (echo.text, echo.finish, echo.prompt_tokens, echo.completion_tokens) == (
        "one two",
        "length",
        2,
        2,
    )
    tool = make_reply(settings, [], "q", None, tools=True, tool_prefix="call_")
    assert (tool.finish, tool.tool_name, json.loads(tool.tool_arguments)) == ("tool", "f", {"a": 1})
    assert tool.tool_id.startswith("call_")


@pytest.mark.parametrize(
    "changes",
    [
        {"fault_rate": 1.5},
        {"fault_rate": 0.5, "random_faults": ()},
        {"latency": -1},
        {"stream_chunks": 0},
        {"embedding_dim": 0},
        {"tool_arguments": "[1]"},
        {"reply": None},
        {"idle_timeout": 0},
        {"close_after_requests": 0},
        {"seed": "x"},
        {"random_faults": "explode"},
    ],
)
def test_settings_reject_bad_values(changes: dict[str, Any]) -> None:
    """Bad settings raise ConfigError naming the problem."""
    with pytest.raises(ConfigError):
        MockSettings(**changes)
