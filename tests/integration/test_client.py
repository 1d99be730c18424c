"""Client against MockLLMServer: endpoints, providers, retries, deadlines, security."""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Iterator

import pytest
from doubles import FakeSleep
from rawserver import RawServer, read_request

import llmpool
from llmpool import exceptions as exc
from llmpool.testing import Fault, MockLLMServer

HI = [{"role": "user", "content": "hi"}]
KEY = "sk-secret-0123456789abcdef"


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def client(mock_server: MockLLMServer, sleep: FakeSleep) -> Iterator[llmpool.Client]:
    with llmpool.Client(mock_server.base_url, api_key=KEY, sleep=sleep) as c:
        yield c


@pytest.fixture
def anthropic(mock_server: MockLLMServer, sleep: FakeSleep) -> Iterator[llmpool.Client]:
    with llmpool.Client(mock_server.base_url, api_key=KEY, provider="anthropic", sleep=sleep) as c:
        yield c


# --------------------------------------------------------------------------- endpoints


def test_chat_returns_a_frozen_completion(client: llmpool.Client) -> None:
    """chat() returns a ChatCompletion with text, finish reason, usage and request id."""
    reply = client.chat("m", HI)
    assert isinstance(reply, llmpool.ChatCompletion)
    assert reply.text == "Hello from the mock server."
    assert reply.finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.request_id and reply.request_id.startswith("req_")
    assert reply.raw["object"] == "chat.completion"


def test_openai_sends_bearer_key_and_json(
    client: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """The OpenAI provider sends the key as a Bearer token and the messages as JSON."""
    client.chat("m", HI, temperature=0.0, max_tokens=5)
    sent = mock_server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["messages"] == HI
    assert sent.json["temperature"] == 0.0 and sent.json["max_tokens"] == 5


def test_complete_embed_and_models(client: llmpool.Client) -> None:
    """complete(), embed() and models() hit their endpoints and parse the results."""
    assert client.complete("m", "say hi").text == "Hello from the mock server."
    vectors = client.embed("e", ["a", "b", "c"]).vectors
    assert len(vectors) == 3 and len(vectors[0]) == 8
    assert client.models() == ("mock-model",)


def test_anthropic_messages_with_system_prompt(
    anthropic: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """The Anthropic provider maps the system prompt, sends x-api-key and maps stop_reason."""
    reply = anthropic.chat("claude", [{"role": "system", "content": "be brief"}, *HI])
    sent = mock_server.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert "anthropic-version" in sent.headers
    assert sent.json["system"] == "be brief"
    assert reply.finish_reason == "stop"
    assert reply.text == "Hello from the mock server."


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_stream_yields_chunks_and_reuses_the_connection(
    mock_server: MockLLMServer, provider: str
) -> None:
    """A stream yields the reply in chunks, ends with a finish reason and its
    connection is drained and reused by the next call."""
    with llmpool.Client(mock_server.base_url, api_key=KEY, provider=provider) as c:
        with c.chat("m", HI, stream=True) as stream:
            deltas = [chunk.delta for chunk in stream]
        assert "".join(deltas) == stream.text == "Hello from the mock server."
        assert stream.finish_reason == "stop"
        assert stream.usage is not None and stream.usage.completion_tokens > 0
        c.chat("m", HI)
        stats = c.stats()["pool"]
    assert stats["connections_created"] == 1
    assert stats["connection_reuses"] == 1
    assert mock_server.connections_opened == 1


def test_stream_left_early_returns_its_connection(client: llmpool.Client) -> None:
    """Leaving a stream's with-block early gives the connection back (closed, slot free)."""
    with client.chat("m", HI, stream=True) as stream:
        for _ in stream:
            break
    assert stream.closed
    assert client.stats()["pool"]["in_use"] == 0
    assert client.chat("m", HI).text


def test_unknown_provider_lists_installed_names(mock_server: MockLLMServer) -> None:
    """An unknown provider name raises ConfigError naming the installed providers."""
    with pytest.raises(exc.ConfigError) as info:
        llmpool.Client(mock_server.base_url, provider="nope")
    assert "openai" in str(info.value) and "anthropic" in str(info.value)


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_status_is_retried_with_the_same_idempotency_key(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep, status: int
) -> None:
    """A retryable status is retried; every attempt carries the same Idempotency-Key."""
    mock_server.inject(Fault.status(status))
    assert client.chat("m", HI).text
    first, second = mock_server.requests[-2:]
    assert first.fault is not None and second.fault is None
    key = first.headers["idempotency-key"]
    assert key and second.headers["idempotency-key"] == key
    assert len(sleep.waits) == 1
    assert client.stats()["client"]["retries"] == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, exc.BadRequestError),
        (401, exc.AuthenticationError),
        (403, exc.PermissionDeniedError),
        (404, exc.NotFoundError),
        (422, exc.UnprocessableEntityError),
    ],
)
def test_client_errors_are_never_retried(
    client: llmpool.Client, mock_server: MockLLMServer, status: int, cls: type
) -> None:
    """400/401/403/404/422 raise at once, typed, with status, request id and body excerpt."""
    mock_server.inject(Fault.status(status, message="nope, not this"))
    with pytest.raises(cls) as info:
        client.chat("m", HI)
    err = info.value
    assert err.status_code == status
    assert err.request_id
    assert "nope, not this" in err.body
    assert mock_server.request_count == 1
    assert KEY not in str(err) and KEY not in repr(err) and KEY not in err.body


def test_retry_after_ms_is_honoured(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """retry-after-ms wins over Retry-After, and the client waits exactly that long."""
    mock_server.inject(Fault.status(429, retry_after=7, retry_after_ms=1500))
    client.chat("m", HI)
    assert sleep.waits == [1.5]


def test_retry_after_seconds_and_http_date_are_honoured(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """Retry-After in seconds, and as an HTTP date, set the wait."""
    mock_server.inject(Fault.status(503, retry_after=2))
    client.chat("m", HI)
    mock_server.inject(Fault.status(503, retry_after=30, http_date=True))
    client.chat("m", HI)
    assert sleep.waits[0] == 2.0
    assert 25.0 <= sleep.waits[1] <= 31.0


def test_retry_after_above_the_cap_raises_at_once(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A Retry-After above max_retry_after raises the 429 at once, with no shorter wait."""
    mock_server.inject(Fault.status(429, retry_after=3600))
    with pytest.raises(exc.RateLimitError) as info:
        client.chat("m", HI)
    assert info.value.retry_after == 3600
    assert sleep.waits == []


def test_attempts_are_capped(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """With max_attempts=3 a server that keeps failing sees 3 requests, then the error."""
    mock_server.inject(Fault.status(500), count=5)
    with pytest.raises(exc.InternalServerError):
        client.chat("m", HI)
    assert mock_server.request_count == 3
    assert len(sleep.waits) == 2
    assert all(0 <= w <= 8.0 for w in sleep.waits)


def test_deadline_refuses_a_wait_it_cannot_cover(
    mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A retry whose wait would outlast the deadline raises DeadlineExceeded at once."""
    with llmpool.Client(mock_server.base_url, deadline=5.0, sleep=sleep) as c:
        mock_server.inject(Fault.status(429, retry_after=10))
        with pytest.raises(llmpool.DeadlineExceeded) as info:
            c.chat("m", HI)
    assert sleep.waits == []
    assert isinstance(info.value.__cause__, exc.RateLimitError)
    assert info.value.attempts == 1


def test_deadline_bounds_a_slow_attempt(mock_server: MockLLMServer) -> None:
    """A per-call deadline shorter than the server's delay ends the call (no hang)."""
    with llmpool.Client(mock_server.base_url, timeout=30.0) as c:
        mock_server.inject(Fault.delay(2.0))
        with pytest.raises((llmpool.DeadlineExceeded, exc.ReadTimeout)):
            c.chat("m", HI, deadline=0.2)


def test_connection_reset_is_retried(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A reset before any response byte on a fresh connection is retried by the policy."""
    mock_server.inject(Fault.reset())
    assert client.chat("m", HI).text
    assert mock_server.request_count == 2
    assert len(sleep.waits) == 1


def test_read_timeout_is_retried_with_the_idempotency_key(
    mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A ReadTimeout on a POST is retried (the call carries an Idempotency-Key)."""
    with llmpool.Client(mock_server.base_url, timeout=0.1, sleep=sleep) as c:
        mock_server.inject(Fault.delay(1.0))
        assert c.chat("m", HI).text
    first, second = mock_server.requests[-2:]
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


def test_read_timeout_not_retried_when_the_policy_says_so(
    mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """retry_read_timeout=False makes a ReadTimeout final."""
    policy = llmpool.RetryPolicy(retry_read_timeout=False)
    with llmpool.Client(mock_server.base_url, timeout=0.1, retry=policy, sleep=sleep) as c:
        mock_server.inject(Fault.delay(1.0))
        with pytest.raises(exc.ReadTimeout):
            c.chat("m", HI)
    assert sleep.waits == []


def test_error_object_in_a_200_is_invalid_response(
    client: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """A 200 whose body is not a completion raises InvalidResponse with an excerpt."""
    mock_server.inject(Fault.stream_error())  # non-streaming: a 200 holding an error object
    with pytest.raises(exc.InvalidResponse) as info:
        client.chat("m", HI)
    assert info.value.body and info.value.request_id
    assert not isinstance(info.value.__cause__, exc.LLMPoolError)


def test_oversized_body_raises_response_too_large(mock_server: MockLLMServer) -> None:
    """A body over max_response_bytes raises ResponseTooLarge and frees the connection."""
    with llmpool.Client(mock_server.base_url, max_response_bytes=4096) as c:
        mock_server.inject(Fault.oversized(100_000))
        with pytest.raises(exc.ResponseTooLarge):
            c.chat("m", HI)
        assert c.stats()["pool"]["in_use"] == 0
        assert c.chat("m", HI).text


# --------------------------------------------------------------------------- stream faults


def test_stream_disconnect_before_any_chunk_is_retried(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A stream that drops before delivering anything is retried transparently."""
    mock_server.inject(Fault.stream_disconnect(after_chunks=0))
    with client.chat("m", HI, stream=True) as stream:
        assert stream.text == "" and "".join(c.delta for c in stream) == stream.text
    assert stream.text == "Hello from the mock server."
    assert len(sleep.waits) == 1


def test_stream_disconnect_after_delivery_raises_interrupted(
    client: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """A stream dropped after chunks reached the caller raises StreamInterrupted with the text."""
    mock_server.inject(Fault.stream_disconnect(after_chunks=2))
    got: list[str] = []
    with pytest.raises(exc.StreamInterrupted) as info:
        with client.chat("m", HI, stream=True) as stream:
            got.extend(chunk.delta for chunk in stream)
    assert info.value.delivered is True
    assert info.value.text == "".join(got) and info.value.text
    assert sleep.waits == []
    assert client.stats()["pool"]["in_use"] == 0


def test_stream_without_final_marker_raises_incomplete(
    client: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """A stream that ends cleanly without [DONE] or a finish reason raises IncompleteStream."""
    mock_server.inject(Fault.stream_truncate(after_chunks=2))
    with pytest.raises(exc.IncompleteStream) as info:
        with client.chat("m", HI, stream=True) as stream:
            for _ in stream:
                pass
    assert info.value.text


def test_malformed_chunk_raises_invalid_response(
    anthropic: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """A chunk that is not JSON raises InvalidResponse with an excerpt."""
    mock_server.inject(Fault.malformed_chunk(after_chunks=1))
    with pytest.raises(exc.InvalidResponse) as info:
        with anthropic.chat("m", HI, stream=True) as stream:
            for _ in stream:
                pass
    assert anthropic.stats()["pool"]["in_use"] == 0
    assert info.value.request_id and info.value.request_id == stream.request_id


def test_error_event_in_a_200_stream_before_delivery_is_retried(
    anthropic: llmpool.Client, mock_server: MockLLMServer, sleep: FakeSleep
) -> None:
    """An overloaded_error event before any chunk reached the caller is retried."""
    mock_server.inject(Fault.stream_error(after_chunks=0))
    with anthropic.chat("m", HI, stream=True) as stream:
        text = "".join(chunk.delta for chunk in stream)
    assert text == "Hello from the mock server."
    assert len(sleep.waits) == 1


def test_error_event_after_delivery_raises_stream_error(
    anthropic: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """An error event after chunks were delivered raises StreamError, not retried."""
    mock_server.inject(Fault.stream_error(after_chunks=2))
    with pytest.raises(exc.StreamError) as info:
        with anthropic.chat("m", HI, stream=True) as stream:
            for _ in stream:
                pass
    assert info.value.error_type == "overloaded_error"
    assert info.value.delivered is True
    assert info.value.request_id and info.value.request_id == stream.request_id
    back = pickle.loads(pickle.dumps(info.value))
    assert back.delivered is True and back.text == info.value.text


def test_stalled_stream_hits_the_read_timeout(mock_server: MockLLMServer) -> None:
    """A stream that goes silent after delivering raises ReadTimeout, it never hangs."""
    with llmpool.Client(mock_server.base_url, timeout=0.2) as c:
        mock_server.inject(Fault.stall(after_chunks=1))
        with pytest.raises(exc.ReadTimeout):
            with c.chat("m", HI, stream=True) as stream:
                for _ in stream:
                    pass
        assert c.stats()["pool"]["in_use"] == 0


def test_stream_status_error_raises_from_chat(
    client: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """A 401 on a stream raises from chat() itself, before any iteration."""
    mock_server.inject(Fault.status(401))
    with pytest.raises(exc.AuthenticationError):
        client.chat("m", HI, stream=True)
    assert client.stats()["pool"]["in_use"] == 0


# --------------------------------------------------------------------------- security


def test_api_key_never_in_repr_logs_errors_or_stats(
    mock_server: MockLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The API key appears in no repr, log line, exception message or stats."""
    with caplog.at_level(logging.DEBUG, logger="llmpool"):
        with llmpool.Client(
            mock_server.base_url, api_key=KEY, plugins=["logging"], sleep=lambda s: None
        ) as c:
            c.chat("m", HI)
            mock_server.inject(Fault.status(500), count=3)
            with pytest.raises(exc.InternalServerError) as info:
                c.chat("m", HI)
            text = repr(c) + repr(c.provider) + str(c.stats()) + str(info.value)
            text += repr(info.value) + info.value.body
    assert KEY not in text
    assert all(KEY not in r.getMessage() for r in caplog.records)


def _redirect_to(target: str) -> RawServer:
    location = f"Location: {target}/v1/chat/completions\r\n".encode()
    reply = b"HTTP/1.1 307 Temporary Redirect\r\n" + location + b"Content-Length: 0\r\n\r\n"

    def behaviour(conn: socket.socket, _: int) -> None:
        while read_request(conn) is not None:
            conn.sendall(reply)

    return RawServer(behaviour)


def test_redirects_are_off_by_default(mock_server: MockLLMServer) -> None:
    """A 307 is not followed unless asked: it raises a status error."""
    with _redirect_to(mock_server.origin) as hop:
        with llmpool.Client(hop.url + "/v1", api_key=KEY) as c:
            with pytest.raises(exc.APIStatusError) as info:
                c.chat("m", HI)
    assert info.value.status_code == 307
    assert mock_server.request_count == 0


def test_followed_redirect_to_another_host_drops_the_key(mock_server: MockLLMServer) -> None:
    """With follow_redirects, the call lands, but the key never goes to the other host."""
    target = mock_server.origin.replace("127.0.0.1", "localhost")
    with _redirect_to(target) as hop:
        with llmpool.Client(hop.url + "/v1", api_key=KEY, follow_redirects=True) as c:
            assert c.chat("m", HI).text
    sent = mock_server.requests[-1]
    assert "authorization" not in sent.headers
    assert KEY not in str(dict(sent.headers))


def test_with_options_shares_the_pool(client: llmpool.Client) -> None:
    """with_options() makes a client that shares the pool; closing it leaves the pool open."""
    quick = client.with_options(timeout=5.0, deadline=10.0)
    quick.chat("m", HI)
    quick.close()
    assert quick.pool is client.pool and not client.pool.closed
    client.chat("m", HI)
    assert client.stats()["pool"]["connections_created"] == 1
    with pytest.raises(exc.ConfigError):
        client.with_options(bogus=1)


def test_shared_pool_is_not_closed_by_the_client(mock_server: MockLLMServer) -> None:
    """A pool passed in is shared: closing the client does not close it."""
    with llmpool.ConnectionPool() as pool:
        with llmpool.Client(mock_server.base_url, pool=pool) as c:
            c.chat("m", HI)
        assert not pool.closed


def test_stream_text_is_bounded_but_every_chunk_arrives(mock_server: MockLLMServer) -> None:
    """Past max_stream_text a stream keeps only a tail for .text; the caller gets every chunk."""
    reply = " ".join(f"w{i}" for i in range(3000))
    mock_server.configure(reply=reply, stream_chunks=300)
    with llmpool.Client(mock_server.base_url, max_stream_text=1000) as c:
        with c.chat("m", HI, stream=True) as stream:
            received = "".join(chunk.delta for chunk in stream)
    assert received == reply
    assert stream.text_truncated
    assert len(stream.text) <= 1000
    assert reply.endswith(stream.text)
    with llmpool.Client(mock_server.base_url) as c:
        with c.chat("m", HI, stream=True) as stream:
            assert "".join(chunk.delta for chunk in stream) == stream.text == reply
    assert not stream.text_truncated


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_client_works_in_a_forked_child_even_if_a_lock_was_held(
    mock_server: MockLLMServer,
) -> None:
    """Forked while another thread held the client's lock, the child still calls."""
    import os
    import threading

    with llmpool.Client(mock_server.base_url) as c:
        c.chat("m", HI)
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with c._lock:
                held.set()
                release.wait(5)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(5)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            import signal

            signal.alarm(10)  # a deadlocked child dies instead of hanging the test
            code = 1
            try:
                code = 0 if c.chat("m", HI).text and c.stats()["client"]["calls"] >= 2 else 2
            finally:
                os._exit(code)
        release.set()
        holder.join()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_every_call_parameter_reaches_the_server(
    client: llmpool.Client, mock_server: MockLLMServer
) -> None:
    """chat(top_p=, seed=, user=, tool_choice=, response_format=) lands in the JSON body."""
    client.chat(
        "m",
        HI,
        top_p=0.5,
        seed=7,
        user="u-9",
        tool_choice="none",
        response_format={"type": "json_object"},
    )
    sent = mock_server.requests[-1].json
    assert (sent["top_p"], sent["seed"], sent["user"]) == (0.5, 7, "u-9")
    assert sent["tool_choice"] == "none" and sent["response_format"] == {"type": "json_object"}
    with pytest.raises(TypeError, match="temprature"):
        client.chat("m", HI, temprature=0.2)  # type: ignore[call-overload]


def test_anthropic_base_url_with_or_without_v1(mock_server: MockLLMServer) -> None:
    """The Anthropic SDK's base URL (no /v1) and llmpool's (with /v1) both reach /v1/messages."""
    for base in (mock_server.origin, mock_server.origin + "/v1"):
        with llmpool.Client(base, api_key=KEY, provider="anthropic") as c:
            assert c.chat("m", HI).text
            assert c.base_url == mock_server.origin + "/v1"
        assert mock_server.requests[-1].path == "/v1/messages"


def test_base_url_from_the_providers_environment_variable(
    mock_server: MockLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without base_url, ANTHROPIC_BASE_URL (for anthropic) names the server."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock_server.origin)
    with llmpool.Client(api_key=KEY, provider="anthropic") as c:
        assert c.chat("m", HI).text
        assert c.base_url == mock_server.origin + "/v1"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with llmpool.Client(api_key=KEY) as c:
        assert c.base_url == "https://api.openai.com/v1"
