"""The Anthropic provider: OpenAI-style calls mapped to Messages and back."""

from __future__ import annotations

import json

import pytest

from llmpool import exceptions as exc
from llmpool.models import ChatChunk, Message, ToolCall, Usage
from llmpool.params import CallParams
from llmpool.providers.anthropic import AnthropicProvider, AnthropicStreamParser
from llmpool.streaming import SSEDecoder

KEY = "sk-ant-test-0123456789"

MESSAGE_BODY = json.dumps(
    {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "content": [
            {"type": "text", "text": "Hello! "},
            {"type": "text", "text": "How can I help?"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 8},
    }
).encode()

TOOL_USE_BODY = json.dumps(
    {
        "id": "msg_tool",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "content": [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"city": "Paris", "unit": "celsius"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 50,
        },
    }
).encode()


def sse(*events: tuple[str, dict[str, object]]) -> bytes:
    """Anthropic-style SSE text: an event line and a data line per event."""
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


STREAM = sse(
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_s",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-haiku-20241022",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " th\u00e9re"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

TOOL_STREAM = sse(
    (
        "message_start",
        {"type": "message_start", "message": {"id": "msg_t", "usage": {"input_tokens": 9}}},
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Ok."}},
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 30},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)


def assistant_call(arguments: str) -> dict[str, object]:
    """An assistant message with one tool call whose arguments are *arguments*."""
    call = {"id": "t", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


@pytest.fixture
def provider() -> AnthropicProvider:
    return AnthropicProvider(api_key=KEY)


def run_stream(raw: bytes, piece: int = 5) -> tuple[list[ChatChunk], AnthropicStreamParser]:
    """Feed *raw* through the SSE decoder in pieces and the Anthropic stream parser."""
    decoder = SSEDecoder()
    parser = AnthropicProvider().stream_parser(request_id="req_a")
    chunks = []
    for start in range(0, len(raw), piece):
        for event in decoder.feed(raw[start : start + piece]):
            chunk = parser.feed(event)
            if chunk is not None:
                chunks.append(chunk)
    decoder.flush()
    return chunks, parser


# --------------------------------------------------------------------------- requests


def test_headers(provider: AnthropicProvider) -> None:
    """x-api-key, anthropic-version and JSON headers are sent; no Bearer auth."""
    headers = provider.headers()
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("llmpool/")
    assert "Authorization" not in headers


def test_version_and_beta_options() -> None:
    """anthropic_version and beta are configurable."""
    provider = AnthropicProvider(api_key=KEY, anthropic_version="2024-01-01", beta=["a", "b"])
    headers = provider.headers()
    assert headers["anthropic-version"] == "2024-01-01"
    assert headers["anthropic-beta"] == "a,b"


@pytest.mark.parametrize(
    ("option", "value"),
    [("anthropic_version", ""), ("default_max_tokens", 0), ("default_max_tokens", "9")],
)
def test_bad_options_raise_config_error(option: str, value: object) -> None:
    """Bad provider options raise ConfigError naming the option."""
    with pytest.raises(exc.ConfigError) as info:
        AnthropicProvider(**{option: value})  # type: ignore[arg-type]
    assert info.value.key == option


def test_build_chat_maps_system_stop_and_default_max_tokens(provider: AnthropicProvider) -> None:
    """System messages go to the top-level system; stop -> stop_sequences; max_tokens defaults."""
    req = provider.build_chat(
        "claude-3-5-haiku-20241022",
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Answer in French."},
        ],
        params=CallParams(stop="END", temperature=0.5),
    )
    assert (req.method, req.path) == ("POST", "/messages")
    assert req.payload == {
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "You are terse.\n\nAnswer in French.",
        "temperature": 0.5,
        "stop_sequences": ["END"],
    }


def test_build_chat_explicit_max_tokens_stream_and_extra_body(provider: AnthropicProvider) -> None:
    """max_tokens, stream and extra_body (which wins) reach the payload."""
    req = provider.build_chat(
        "c",
        [{"role": "user", "content": "Hi"}],
        stream=True,
        params=CallParams(max_tokens=10, extra_body={"top_k": 5, "tool_choice": {"type": "auto"}}),
    )
    assert req.payload is not None
    assert req.payload["max_tokens"] == 10
    assert req.payload["stream"] is True
    assert req.payload["top_k"] == 5
    assert "system" not in req.payload
    assert req.headers["Accept"] == "text/event-stream"


def test_system_with_content_parts_becomes_blocks(provider: AnthropicProvider) -> None:
    """A system prompt given as parts stays blocks (keeping cache_control)."""
    part = {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}}
    req = provider.build_chat(
        "c", [{"role": "system", "content": [part]}, {"role": "user", "content": "q"}]
    )
    assert req.payload is not None
    assert req.payload["system"] == [part]


def test_tools_and_tool_round_trip_mapping(provider: AnthropicProvider) -> None:
    """OpenAI tools, assistant tool_calls and tool messages map to Anthropic blocks."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "noop"}},
        {"name": "native", "input_schema": {"type": "object"}},
    ]
    earlier = Message(
        role="assistant",
        content="Checking both.",
        tool_calls=(
            ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="toolu_2", name="noop", arguments=""),
        ),
    )
    req = provider.build_chat(
        "c",
        [
            {"role": "user", "content": "Weather?"},
            earlier,
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "done"},
            {"role": "user", "content": "Thanks"},
        ],
        params=CallParams(tools=tools),
    )
    assert req.payload is not None
    assert req.payload["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
        {"name": "native", "input_schema": {"type": "object"}},
    ]
    assert req.payload["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "noop", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "done"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_image_parts_are_mapped(provider: AnthropicProvider) -> None:
    """OpenAI image_url parts become Anthropic base64 or url image blocks."""
    req = provider.build_chat(
        "c",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert req.payload is not None
    assert req.payload["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "tool", "content": "no id"}],
        [assistant_call("{bad")],
        [assistant_call("[1]")],
        [{"role": "wizard", "content": "x"}],
    ],
)
def test_unmappable_messages_raise_config_error(
    provider: AnthropicProvider, messages: list[dict[str, object]]
) -> None:
    """Messages that cannot be mapped raise ConfigError before any I/O."""
    with pytest.raises(exc.ConfigError) as info:
        provider.build_chat("c", messages)
    assert info.value.key == "messages"


def test_unmappable_tools_raise_config_error(provider: AnthropicProvider) -> None:
    """An OpenAI tool without a name raises ConfigError."""
    with pytest.raises(exc.ConfigError) as info:
        provider.build_chat(
            "c",
            [{"role": "user", "content": "x"}],
            params=CallParams(tools=[{"type": "function", "function": {}}]),
        )
    assert info.value.key == "tools"


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda p: p.build_complete("c", "x"), "text completions"),
        (lambda p: p.parse_complete(b"{}", request_id=None), "text completions"),
        (lambda p: p.build_embed("c", "x"), "embeddings"),
        (lambda p: p.parse_embed(b"{}", request_id=None), "embeddings"),
    ],
)
def test_completions_and_embeddings_unsupported(
    provider: AnthropicProvider, call: object, what: str
) -> None:
    """Completions and embeddings raise ConfigError naming the provider."""
    with pytest.raises(exc.ConfigError) as info:
        call(provider)  # type: ignore[operator]
    assert "anthropic" in str(info.value)
    assert what in str(info.value)


# --------------------------------------------------------------------------- parsing


def test_parse_message(provider: AnthropicProvider) -> None:
    """Text blocks are joined; end_turn -> stop; input/output tokens -> usage."""
    result = provider.parse_chat(MESSAGE_BODY, request_id="req_1")
    assert result.text == "Hello! How can I help?"
    assert result.finish_reason == "stop"
    assert result.id == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert result.model == "claude-3-5-sonnet-20241022"
    assert result.usage == Usage(prompt_tokens=12, completion_tokens=8, total_tokens=20)
    assert result.request_id == "req_1"
    assert result.raw["stop_sequence"] is None


def test_parse_tool_use(provider: AnthropicProvider) -> None:
    """tool_use blocks become ToolCalls with JSON arguments; cached tokens count as prompt."""
    result = provider.parse_chat(TOOL_USE_BODY, request_id=None)
    message = result.choices[0].message
    assert message.content == "Let me check."
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert (call.id, call.name) == ("toolu_01A09q90qw90lq917835lq9", "get_weather")
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(prompt_tokens=155, completion_tokens=20, total_tokens=175)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        (None, None),
    ],
)
def test_stop_reason_mapping(
    provider: AnthropicProvider, stop_reason: str | None, finish_reason: str | None
) -> None:
    """stop_reason maps to OpenAI's finish_reason vocabulary (unknown ones pass through)."""
    body = json.dumps({"id": "m", "model": "c", "content": [], "stop_reason": stop_reason}).encode()
    result = provider.parse_chat(body, request_id=None)
    assert result.finish_reason == finish_reason
    assert result.choices[0].message.content is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"id": "m"}',
        b'{"content": {"type": "text"}}',
        b'{"content": [{"type": "text"}]}',
        b'{"content": [{"type": "tool_use", "name": "f"}]}',
        b'{"content": [], "usage": {"input_tokens": "x"}}',
        b'"a string"',
    ],
)
def test_malformed_messages_raise_invalid_response(
    provider: AnthropicProvider, body: bytes
) -> None:
    """Invalid JSON or a wrong shape raises InvalidResponse with an excerpt and the request id."""
    with pytest.raises(exc.InvalidResponse) as info:
        provider.parse_chat(body, request_id="req_x")
    assert info.value.request_id == "req_x"
    assert info.value.body == body.decode()


def test_parse_models(provider: AnthropicProvider) -> None:
    """Anthropic's model list gives the ids."""
    body = (
        b'{"data":[{"type":"model","id":"claude-3-5-sonnet-20241022","display_name":"x"}],'
        b'"has_more":false}'
    )
    assert provider.parse_models(body) == ("claude-3-5-sonnet-20241022",)


# --------------------------------------------------------------------------- errors


def test_parse_error_anthropic_shape(provider: AnthropicProvider) -> None:
    """An Anthropic error body gives message, type, request-id and retry_after."""
    body = json.dumps(
        {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": "req_body",
        }
    ).encode()
    err = provider.parse_error(529, {"request-id": "req_hdr", "retry-after": "3"}, body)
    assert isinstance(err, exc.OverloadedError)
    assert (err.message, err.error_type, err.request_id, err.retry_after) == (
        "Overloaded",
        "overloaded_error",
        "req_hdr",
        3.0,
    )


def test_parse_error_request_id_from_body_when_header_missing(provider: AnthropicProvider) -> None:
    """The body's request_id stands in when no header carries one."""
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"},'
        b'"request_id":"req_b"}'
    )
    err = provider.parse_error(400, {}, body)
    assert isinstance(err, exc.BadRequestError)
    assert err.request_id == "req_b"
    assert err.error_type == "invalid_request_error"


def test_request_id_header(provider: AnthropicProvider) -> None:
    """request-id (any case) is the request id."""
    assert provider.request_id({"Request-Id": "req_1"}) == "req_1"
    assert provider.request_id({}) is None


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("piece", [1, 5, 8192])
def test_stream_text_finish_usage_and_done(piece: int) -> None:
    """Text deltas become chunks; message_delta gives finish and usage; message_stop is done."""
    chunks, parser = run_stream(STREAM, piece)
    assert "".join(c.delta for c in chunks) == "Hi th\u00e9re"
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage == Usage(prompt_tokens=25, completion_tokens=15, total_tokens=40)
    assert parser.done
    assert parser.finish_reason == "stop"
    assert parser.usage == final.usage
    assert (parser.response_id, parser.model) == ("msg_s", "claude-3-5-haiku-20241022")


def test_stream_without_message_stop_is_not_done() -> None:
    """A stream cut before message_stop leaves done False."""
    _, parser = run_stream(STREAM[: STREAM.index(b"event: message_stop")])
    assert not parser.done
    assert parser.finish_reason == "stop"


def test_stream_tool_use_as_openai_style_deltas() -> None:
    """tool_use blocks and input_json_delta become OpenAI-style tool_calls deltas."""
    chunks, parser = run_stream(TOOL_STREAM)
    calls = [call for c in chunks for call in c.tool_calls]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(call["index"] == 0 for call in calls)
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert parser.finish_reason == "tool_calls"
    assert "".join(c.delta for c in chunks) == "Ok."
    assert parser.usage == Usage(prompt_tokens=9, completion_tokens=30, total_tokens=39)


def test_error_event_raises_retryable_stream_error() -> None:
    """An overloaded_error event raises StreamError, retryable while nothing was delivered."""
    raw = STREAM[: STREAM.index(b"event: content_block_stop")] + sse(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    with pytest.raises(exc.StreamError) as info:
        run_stream(raw)
    err = info.value
    assert (err.error_type, err.message, err.retryable, err.delivered) == (
        "overloaded_error",
        "Overloaded",
        True,
        False,
    )
    assert err.text == ""  # the Stream, not the parser, knows what it delivered
    assert err.request_id == "req_a"


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [("api_error", True), ("rate_limit_error", True), ("invalid_request_error", False)],
)
def test_error_event_retryable_only_when_transient(kind: str, retryable: bool) -> None:
    """Only transient error types are marked retryable."""
    raw = sse(("error", {"type": "error", "error": {"type": kind, "message": "m"}}))
    with pytest.raises(exc.StreamError) as info:
        run_stream(raw)
    assert info.value.retryable is retryable


def test_unknown_and_thinking_events_are_ignored() -> None:
    """Unknown event types and non-text deltas yield no chunk."""
    raw = sse(
        ("future_event", {"type": "future_event", "x": 1}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
        ),
    )
    chunks, parser = run_stream(raw)
    assert chunks == []
    assert not parser.done


@pytest.mark.parametrize(
    "raw",
    [
        b"event: content_block_delta\ndata: {not json\n\n",
        b"event: content_block_delta\n"
        b'data: {"type": "content_block_delta", "delta": {"type": "text_delta"}}\n\n',
        b'event: message_start\ndata: {"type": "message_start"}\n\n',
        b"event: ping\ndata: 12\n\n",
    ],
)
def test_malformed_stream_events_raise_invalid_response(raw: bytes) -> None:
    """Corrupt event data raises InvalidResponse, never a raw JSON or key error."""
    with pytest.raises(exc.InvalidResponse) as info:
        run_stream(raw)
    assert info.value.request_id == "req_a"


def test_error_event_with_plain_text_data() -> None:
    """An error event whose data is not JSON still raises StreamError, with the text."""
    with pytest.raises(exc.StreamError) as info:
        run_stream(b"event: error\ndata: Service Unavailable\n\n")
    assert info.value.message == "Service Unavailable"
    assert info.value.retryable is False
