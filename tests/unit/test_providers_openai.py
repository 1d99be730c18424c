"""The OpenAI provider: requests built, bodies and streams parsed, errors typed."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from llmpool import exceptions as exc
from llmpool.models import ChatChunk, Message, ToolCall, Usage
from llmpool.params import CallParams
from llmpool.providers.openai import OpenAIProvider
from llmpool.sse import SSEEvent
from llmpool.streaming import SSEDecoder

KEY = "sk-test-0123456789abcdef"

CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-9xyz",
        "object": "chat.completion",
        "created": 1717000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_abc",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
).encode()

TOOL_BODY = json.dumps(
    {
        "id": "chatcmpl-tool",
        "object": "chat.completion",
        "created": 1717000001,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": '{"city": "Paris"}',
                            },
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
    }
).encode()

STREAM = (
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
    b"data: [DONE]\n\n"
)

TOOL_STREAM = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,'
    b'"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather",'
    b'"arguments":""}}]},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
    b'{"arguments":"{\\"city\\": "}}]},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
    b'{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.fixture
def provider() -> OpenAIProvider:
    return OpenAIProvider(api_key=KEY)


def run_stream(
    provider: OpenAIProvider, raw: bytes, piece: int = 7
) -> tuple[list[ChatChunk], object]:
    """Feed *raw* through the SSE decoder in small pieces and the stream parser."""
    decoder = SSEDecoder()
    parser = provider.stream_parser(request_id="req_s")
    chunks = []
    for start in range(0, len(raw), piece):
        for event in decoder.feed(raw[start : start + piece]):
            chunk = parser.feed(event)
            if chunk is not None:
                chunks.append(chunk)
    decoder.flush()
    return chunks, parser


# --------------------------------------------------------------------------- requests


def test_headers_auth_json_and_user_agent(provider: OpenAIProvider) -> None:
    """Bearer auth, JSON content type and llmpool's User-Agent are sent."""
    headers = provider.headers()
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("llmpool/")
    assert provider.headers(stream=True)["Accept"] == "text/event-stream"


def test_headers_are_a_fresh_copy(provider: OpenAIProvider) -> None:
    """Changing the returned headers does not change the shared provider."""
    provider.headers()["Authorization"] = "x"
    assert provider.headers()["Authorization"] == f"Bearer {KEY}"


def test_no_key_no_authorization_and_org_project_headers() -> None:
    """A keyless provider sends no Authorization; organization and project are sent."""
    provider = OpenAIProvider(organization="org-1", project="proj-1")
    headers = provider.headers()
    assert "Authorization" not in headers
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["OpenAI-Project"] == "proj-1"


def test_default_headers_override_case_insensitively() -> None:
    """default_headers replace built-in ones whatever their case."""
    provider = OpenAIProvider(api_key=KEY, default_headers={"user-agent": "mine/1", "X-A": "b"})
    headers = provider.headers()
    assert headers["user-agent"] == "mine/1"
    assert "User-Agent" not in headers
    assert headers["X-A"] == "b"


def test_build_chat_payload(provider: OpenAIProvider) -> None:
    """A chat request posts the OpenAI payload to /chat/completions."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    req = provider.build_chat(
        "gpt-4o",
        [{"role": "user", "content": "hi"}],
        params=CallParams(
            temperature=0.2,
            max_tokens=50,
            stop="END",
            tools=tools,
            extra_body={"seed": 7, "temperature": 0.3},
        ),
    )
    assert (req.method, req.path, req.stream) == ("POST", "/chat/completions", False)
    assert req.payload == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": tools,
        "temperature": 0.3,
        "max_tokens": 50,
        "stop": ["END"],
        "seed": 7,
    }
    assert json.loads(req.body or b"") == req.payload
    assert req.headers["Authorization"] == f"Bearer {KEY}"


def test_build_chat_stream_asks_for_usage(provider: OpenAIProvider) -> None:
    """A streamed chat sets stream and stream_options.include_usage."""
    req = provider.build_chat("m", [{"role": "user", "content": "hi"}], stream=True)
    assert req.stream
    assert req.payload is not None
    assert req.payload["stream"] is True
    assert req.payload["stream_options"] == {"include_usage": True}
    assert req.headers["Accept"] == "text/event-stream"


def test_build_chat_accepts_message_values_for_tool_round_trips(provider: OpenAIProvider) -> None:
    """A Message from an earlier result is sent back in OpenAI form."""
    earlier = Message(
        role="assistant",
        content=None,
        tool_calls=(ToolCall(id="call_1", name="f", arguments='{"x":1}'),),
    )
    req = provider.build_chat(
        "m",
        [
            {"role": "user", "content": "go"},
            earlier,
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ],
    )
    assert req.payload is not None
    assert req.payload["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
        ],
    }


@pytest.mark.parametrize(
    ("model", "messages", "key"),
    [
        ("", [{"role": "user", "content": "x"}], "model"),
        ("m", [], "messages"),
        ("m", "hello", "messages"),
        ("m", [{"content": "no role"}], "messages"),
        ("m", [42], "messages"),
    ],
)
def test_build_chat_rejects_bad_arguments(
    provider: OpenAIProvider, model: str, messages: object, key: str
) -> None:
    """Bad call arguments raise ConfigError naming the argument, before any I/O."""
    with pytest.raises(exc.ConfigError) as info:
        provider.build_chat(model, messages)  # type: ignore[arg-type]
    assert info.value.key == key


def test_build_complete_and_embed_and_models(provider: OpenAIProvider) -> None:
    """Completions, embeddings and models have their paths and payloads."""
    req = provider.build_complete(
        "davinci", "Once", stream=True, params=CallParams(max_tokens=5, stop=["\n"])
    )
    assert req.path == "/completions"
    assert req.payload == {
        "model": "davinci",
        "prompt": "Once",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 5,
        "stop": ["\n"],
    }
    emb = provider.build_embed("text-embedding-3-small", ("a", "b"))
    assert (emb.path, emb.payload) == (
        "/embeddings",
        {"model": "text-embedding-3-small", "input": ["a", "b"]},
    )
    models = provider.build_models()
    assert (models.method, models.path, models.payload, models.body) == (
        "GET",
        "/models",
        None,
        None,
    )
    assert "Content-Type" not in models.headers


def test_build_embed_rejects_non_strings(provider: OpenAIProvider) -> None:
    """Embedding input must be text."""
    with pytest.raises(exc.ConfigError):
        provider.build_embed("e", [1, 2])  # type: ignore[list-item]


# --------------------------------------------------------------------------- parsing


def test_parse_chat(provider: OpenAIProvider) -> None:
    """A chat.completion body becomes a ChatCompletion with usage and raw extras."""
    result = provider.parse_chat(CHAT_BODY, request_id="req_1")
    assert result.text == "Hello there!"
    assert result.finish_reason == "stop"
    assert result.id == "chatcmpl-9xyz"
    assert result.model == "gpt-4o-mini-2024-07-18"
    assert result.created == 1717000000
    assert result.usage == Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15)
    assert result.request_id == "req_1"
    assert result.raw["system_fingerprint"] == "fp_abc"


def test_parse_chat_tool_calls(provider: OpenAIProvider) -> None:
    """Tool calls become ToolCall values with the JSON arguments text."""
    result = provider.parse_chat(TOOL_BODY, request_id=None)
    message = result.choices[0].message
    assert message.content is None
    assert message.tool_calls == (
        ToolCall(id="call_abc", name="get_weather", arguments='{"city": "Paris"}'),
    )
    assert result.finish_reason == "tool_calls"


def test_parse_chat_content_parts_and_missing_usage(provider: OpenAIProvider) -> None:
    """Content given as text parts is joined; a missing usage is zeros."""
    body = json.dumps(
        {
            "id": "x",
            "model": "m",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()
    result = provider.parse_chat(body, request_id=None)
    assert result.text == "ab"
    assert result.usage == Usage()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"id": "x", "choices": [',
        b"[1, 2, 3]",
        b'{"id": "x"}',
        b'{"choices": "nope"}',
        b'{"choices": [{"index": 0}]}',
        b'{"choices": [{"message": {"role": "assistant", "content": 5}}]}',
        b'{"choices": [{"message": {"tool_calls": [{"id": "a"}]}}]}',
        b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many"}}',
    ],
)
def test_malformed_chat_bodies_raise_invalid_response(
    provider: OpenAIProvider, body: bytes
) -> None:
    """Invalid JSON or a wrong shape raises InvalidResponse with an excerpt and the request id."""
    with pytest.raises(exc.InvalidResponse) as info:
        provider.parse_chat(body, request_id="req_bad")
    assert info.value.request_id == "req_bad"
    assert info.value.body == body.decode()
    assert info.value.__cause__ is not None or not body


def test_invalid_response_excerpt_is_bounded(provider: OpenAIProvider) -> None:
    """A huge malformed body is cut to an excerpt."""
    with pytest.raises(exc.InvalidResponse) as info:
        provider.parse_chat(b"x" * 100_000, request_id=None)
    assert len(info.value.body) <= exc.BODY_EXCERPT_CHARS + 3


def test_parse_complete(provider: OpenAIProvider) -> None:
    """A text completion becomes a ChatCompletion whose content is the text."""
    body = json.dumps(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 5,
            "model": "davinci",
            "choices": [
                {"text": " upon a time", "index": 0, "logprobs": None, "finish_reason": "length"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
        }
    ).encode()
    result = provider.parse_complete(body, request_id=None)
    assert result.text == " upon a time"
    assert result.finish_reason == "length"
    assert result.choices[0].message.role == "assistant"


def test_parse_embed_orders_by_index_and_decodes_base64(provider: OpenAIProvider) -> None:
    """Vectors come back in input order; base64 float32 vectors are decoded."""
    packed = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 2.0)).decode()
    body = json.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": 1, "embedding": packed},
                {"object": "embedding", "index": 0, "embedding": [0.1, 0, -3]},
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    ).encode()
    result = provider.parse_embed(body, request_id="r")
    assert result.vectors == ((0.1, 0.0, -3.0), (0.5, -1.0, 2.0))
    assert all(isinstance(x, float) for x in result.vectors[0])
    assert result.usage == Usage(prompt_tokens=4, completion_tokens=0, total_tokens=4)
    assert result.model == "text-embedding-3-small"


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"index": 0, "embedding": "!!notbase64"}]}',
        b'{"data": [{"index": 0}]}',
        b'{"data": 1}',
    ],
)
def test_malformed_embeddings_raise_invalid_response(provider: OpenAIProvider, body: bytes) -> None:
    """A wrong embeddings shape raises InvalidResponse."""
    with pytest.raises(exc.InvalidResponse):
        provider.parse_embed(body, request_id=None)


def test_parse_models(provider: OpenAIProvider) -> None:
    """The model list gives the ids."""
    body = (
        b'{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"o1","object":"model"}]}'
    )
    assert provider.parse_models(body) == ("gpt-4o", "o1")
    with pytest.raises(exc.InvalidResponse):
        provider.parse_models(b'{"data": [{"name": "x"}]}')


# --------------------------------------------------------------------------- errors


def test_parse_error_openai_shape_with_retry_headers(provider: OpenAIProvider) -> None:
    """An OpenAI error body gives message, type, request id and retry_after."""
    body = json.dumps(
        {
            "error": {
                "message": "Rate limit reached for gpt-4o",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
    ).encode()
    headers = {"X-Request-Id": "req_429", "retry-after-ms": "1500", "Retry-After": "2"}
    err = provider.parse_error(429, headers, body)
    assert isinstance(err, exc.RateLimitError)
    assert err.message == "Rate limit reached for gpt-4o"
    assert err.error_type == "requests"
    assert err.request_id == "req_429"
    assert err.retry_after == 1.5
    assert "Rate limit reached" in err.body


def test_parse_error_code_when_no_type(provider: OpenAIProvider) -> None:
    """The error code stands in for a missing type."""
    body = b'{"error": {"message": "No such model", "type": null, "code": "model_not_found"}}'
    err = provider.parse_error(404, {}, body)
    assert isinstance(err, exc.NotFoundError)
    assert err.error_type == "model_not_found"
    assert err.retry_after is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "upstream exploded"}', "upstream exploded"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b'{"message": "bad gateway"}', "bad gateway"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b"", "HTTP 502"),
        (b'{"unexpected": true}', '{"unexpected": true}'),
    ],
)
def test_parse_error_fallbacks(provider: OpenAIProvider, body: bytes, message: str) -> None:
    """Other error shapes fall back to their message or the body excerpt."""
    err = provider.parse_error(502, {}, body)
    assert isinstance(err, exc.InternalServerError)
    assert err.message == message


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_stream_text_finish_and_usage(provider: OpenAIProvider, piece: int) -> None:
    """A streamed answer gives deltas, the finish reason, the usage chunk and [DONE]."""
    chunks, parser = run_stream(provider, STREAM, piece)
    assert "".join(c.delta for c in chunks) == "Hello"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    assert parser.done  # type: ignore[attr-defined]
    assert parser.finish_reason == "stop"  # type: ignore[attr-defined]
    assert parser.usage == Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)  # type: ignore[attr-defined]
    assert parser.response_id == "chatcmpl-s"  # type: ignore[attr-defined]


def test_stream_without_done_is_not_done(provider: OpenAIProvider) -> None:
    """A stream cut before [DONE] leaves done False for the caller to report."""
    _, parser = run_stream(provider, STREAM[: STREAM.index(b"data: [DONE]")])
    assert not parser.done  # type: ignore[attr-defined]


def test_stream_tool_call_deltas_are_kept(provider: OpenAIProvider) -> None:
    """Tool-call deltas travel in ChatChunk.tool_calls."""
    chunks, parser = run_stream(provider, TOOL_STREAM)
    calls = [call for c in chunks for call in c.tool_calls]
    assert calls[0]["id"] == "call_1"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert parser.finish_reason == "tool_calls"  # type: ignore[attr-defined]


def test_stream_of_text_completions(provider: OpenAIProvider) -> None:
    """Completion streams carry choices[0].text instead of a delta."""
    raw = (
        b'data: {"id":"cmpl","choices":[{"text":"Once","index":0,"finish_reason":null}]}\n\n'
        b'data: {"id":"cmpl","choices":[{"text":" more","index":0,"finish_reason":"length"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    chunks, parser = run_stream(provider, raw)
    assert [c.delta for c in chunks] == ["Once", " more"]
    assert parser.finish_reason == "length"  # type: ignore[attr-defined]


def test_stream_error_event_raises_stream_error(provider: OpenAIProvider) -> None:
    """A data: {"error": ...} event raises a typed StreamError, retryable if transient."""
    raw = STREAM[: STREAM.index(b"data: [DONE]")].split(b"\n\n")[1] + b"\n\n"
    raw += b'data: {"error": {"message": "The server had an error", "type": "server_error"}}\n\n'
    with pytest.raises(exc.StreamError) as info:
        run_stream(provider, raw)
    err = info.value
    assert err.error_type == "server_error"
    assert err.message == "The server had an error"
    assert err.retryable is True
    assert err.delivered is False
    assert err.text == ""  # the Stream, not the parser, knows what it delivered
    assert err.request_id == "req_s"


def test_stream_error_non_transient_is_not_retryable(provider: OpenAIProvider) -> None:
    """An error type that a retry cannot cure is not retryable."""
    raw = b'data: {"error": {"message": "bad", "type": "invalid_request_error"}}\n\n'
    with pytest.raises(exc.StreamError) as info:
        run_stream(provider, raw)
    assert info.value.retryable is False


@pytest.mark.parametrize(
    "raw",
    [
        b'data: {"id": "c", "choices": [\n\n',
        b"data: not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"choices": [{"delta": "text"}]}\n\n',
    ],
)
def test_malformed_stream_data_raises_invalid_response(
    provider: OpenAIProvider, raw: bytes
) -> None:
    """Corrupt chunk data raises InvalidResponse, never a raw JSONDecodeError."""
    with pytest.raises(exc.InvalidResponse) as info:
        run_stream(provider, raw)
    assert info.value.request_id == "req_s"
    assert info.value.body


def test_empty_data_events_are_skipped(provider: OpenAIProvider) -> None:
    """An empty data event (a keep-alive) yields no chunk."""
    chunks, _ = run_stream(provider, b"data:\n\ndata: [DONE]\n\n")
    assert chunks == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"event: error\ndata: upstream reset\n\n", "upstream reset"),
        (b'event: error\ndata: {"message": "gateway"}\n\n', "gateway"),
        (b'data: {"error": "quota gone"}\n\n', "quota gone"),
    ],
)
def test_other_error_event_shapes(provider: OpenAIProvider, raw: bytes, message: str) -> None:
    """Error events in other shapes (named event, plain text, string error) raise StreamError."""
    with pytest.raises(exc.StreamError) as info:
        run_stream(provider, raw)
    assert info.value.message == message


@pytest.mark.parametrize("parse", ["parse_chat", "parse_complete"])
def test_no_choices_raise_invalid_response(provider: OpenAIProvider, parse: str) -> None:
    """A completion with ``choices: []`` is not a result: InvalidResponse with id and excerpt."""
    body = b'{"id": "x", "model": "m", "choices": []}'
    with pytest.raises(exc.InvalidResponse) as info:
        getattr(provider, parse)(body, request_id="req_empty")
    assert info.value.request_id == "req_empty"
    assert info.value.body == body.decode()
    assert "no choices" in str(info.value)


@pytest.mark.parametrize(
    ("indexes", "problem"),
    [([0, 0], "duplicate"), ([0, 2], "out of range"), ([-1, 0], "out of range"), ([1], "range")],
)
def test_embedding_indexes_must_cover_the_inputs_once(
    provider: OpenAIProvider, indexes: list[int], problem: str
) -> None:
    """Duplicate or out-of-range embedding indexes raise InvalidResponse, never a silent mix-up."""
    data = [{"index": i, "embedding": [float(n)]} for n, i in enumerate(indexes)]
    body = json.dumps({"data": data, "model": "e"}).encode()
    with pytest.raises(exc.InvalidResponse) as info:
        provider.parse_embed(body, request_id="req_e")
    assert problem in str(info.value)
    assert info.value.request_id == "req_e" and info.value.body == body.decode()


def test_embeddings_without_indexes_keep_their_order(provider: OpenAIProvider) -> None:
    """Items without an index are taken in the order given."""
    body = b'{"data": [{"embedding": [1]}, {"embedding": [2]}], "model": "e"}'
    assert provider.parse_embed(body, request_id=None).vectors == ((1.0,), (2.0,))


@pytest.mark.parametrize("count", [1, 3])
def test_embeddings_count_must_match_the_inputs(provider: OpenAIProvider, count: int) -> None:
    """parse_embed_checked refuses a vector count other than the input count."""
    body = b'{"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": [2]}]}'
    assert len(provider.parse_embed_checked(body, request_id=None, inputs=2).vectors) == 2
    with pytest.raises(exc.InvalidResponse) as info:
        provider.parse_embed_checked(body, request_id="req_n", inputs=count)
    assert f"2 vectors for {count} input" in str(info.value)
    assert info.value.request_id == "req_n" and info.value.body == body.decode()


def test_request_ids_are_capped(provider: OpenAIProvider) -> None:
    """A huge request id from a header or an error body is cut to MAX_REQUEST_ID_CHARS."""
    huge = "r" * 10_000
    assert provider.request_id({"x-request-id": huge}) == "r" * exc.MAX_REQUEST_ID_CHARS
    err = provider.parse_error(500, {}, json.dumps({"request_id": huge}).encode())
    assert err.request_id == "r" * exc.MAX_REQUEST_ID_CHARS
    err = exc.error_for_status(400, "x", request_id=huge)
    assert err.request_id is not None and len(err.request_id) == exc.MAX_REQUEST_ID_CHARS


@pytest.mark.parametrize(
    "choice",
    [
        {"index": 0, "delta": {"content": "Hel"}, "finish_reason": None},
        {"index": 0, "delta": {"role": "assistant", "content": ""}},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
        {"index": 2, "delta": {"content": "x"}, "finish_reason": "length"},
        {"index": 0, "delta": {"content": "x"}, "finish_reason": ""},
    ],
)
def test_plain_stream_events_read_as_the_general_path_reads_them(choice: dict[str, Any]) -> None:
    """The fast path for one-choice text deltas gives the chunk the general path gives."""
    obj = {"id": "c", "model": "m", "choices": [choice]}
    event = SSEEvent(data=json.dumps(obj))
    fast = OpenAIProvider().stream_parser(request_id="r")
    general = OpenAIProvider().stream_parser(request_id="r")
    expected = general._full_chunk(obj)
    assert fast.feed(event) == expected
    assert fast.feed_data(event.data) == expected
    assert fast.finish_reason == general.finish_reason


@pytest.mark.parametrize(
    "data",
    [
        '{"choices": [{"index": 0, "delta": {"content": "a"}}]} ',
        '{"choices": [{"index": 0, "delta": {"content": "a"}}]} x',
        '{"choices": [{"index": 0, "delta": {"content": "a"}}]}{}',
        '{"error": {"type": "server_error", "message": "boom"}}',
        '{"choices": "nope"}',
        "[DONE]",
        "  ",
        "{",
        "[1]",
    ],
)
def test_feed_data_is_feed_of_a_default_event(data: str) -> None:
    """feed_data(data) does what feed does with an event of the default type
    (trailing bytes after the JSON go the general way: whitespace is fine,
    anything else is malformed)."""
    results = []
    for call in ("feed", "feed_data"):
        parser = OpenAIProvider().stream_parser(request_id="r")
        try:
            arg: Any = SSEEvent(data=data) if call == "feed" else data
            results.append((repr(getattr(parser, call)(arg)), parser.done))
        except exc.LLMPoolError as err:
            results.append((type(err).__name__, err.request_id))
    assert results[0] == results[1]
    if data.endswith(" x"):
        assert results[0] == ("InvalidResponse", "r")
