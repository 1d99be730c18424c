"""MockLLMServer's endpoints over real loopback sockets, in both API shapes, JSON and SSE."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from llmpool.testing import DEFAULT_REPLY, MockLLMServer

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "say something nice"}]}
MESSAGES = {
    "model": "claude-test",
    "max_tokens": 100,
    "system": "be brief",
    "messages": [{"role": "user", "content": "say something nice"}],
}


@pytest.fixture
def http(mock_server: MockLLMServer) -> Iterator[urllib3.HTTPConnectionPool]:
    """One keep-alive connection to the mock server, without retries."""
    pool = urllib3.HTTPConnectionPool(
        "127.0.0.1", mock_server.port, maxsize=1, block=True, retries=False, timeout=5.0
    )
    yield pool
    pool.close()


def post(
    http: urllib3.HTTPConnectionPool, path: str, payload: Any, **headers: str
) -> urllib3.BaseHTTPResponse:
    body = json.dumps(payload).encode()
    return http.request(
        "POST", path, body=body, headers={"content-type": "application/json", **headers}
    )


def sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of every server-sent event in *body*."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


def test_chat_completion_json(mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool) -> None:
    """A chat completion has OpenAI's shape, echoes the model and counts tokens by words."""
    r = post(http, "/v1/chat/completions", CHAT)
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.data)
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-test"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": DEFAULT_REPLY, "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_chat_completion_max_tokens_cuts_with_length(http: urllib3.HTTPConnectionPool) -> None:
    """max_tokens shorter than the reply cuts it by words and finishes with "length"."""
    body = post(http, "/v1/chat/completions", {**CHAT, "max_tokens": 2}).json()
    assert body["choices"][0]["message"]["content"] == "Hello from"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_chat_stream_chunks_end_with_finish_and_done(http: urllib3.HTTPConnectionPool) -> None:
    """A streamed chat completion is chunked SSE: role, word deltas, finish chunk, [DONE]."""
    r = post(http, "/v1/chat/completions", {**CHAT, "stream": True})
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    events = sse(r.data)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == DEFAULT_REPLY
    assert len(chunks) == 1 + len(DEFAULT_REPLY.split()) + 1
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert "usage" not in chunks[0]


def test_chat_stream_include_usage_adds_a_usage_chunk(http: urllib3.HTTPConnectionPool) -> None:
    """stream_options.include_usage gives every chunk a usage key and a final usage chunk."""
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = sse(post(http, "/v1/chat/completions", payload).data)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_stream_chunks_setting_groups_words(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """stream_chunks=2 splits the reply into two deltas of whole words."""
    mock_server.configure(stream_chunks=2)
    events = sse(post(http, "/v1/chat/completions", {**CHAT, "stream": True}).data)
    deltas = [json.loads(d)["choices"][0]["delta"].get("content") for _, d in events[1:-2]]
    assert deltas == ["Hello from the", " mock server."]


def test_echo_replies_with_the_last_user_message(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """echo=True answers with the last user message's text, parts joined."""
    mock_server.configure(echo=True)
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second one"}]},
    ]
    body = post(http, "/v1/chat/completions", {"model": "m", "messages": messages}).json()
    assert body["choices"][0]["message"]["content"] == "second one"


def test_configured_reply_applies_from_next_request_on_same_connection(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """configure() between two keep-alive requests changes the second answer."""
    post(http, "/v1/chat/completions", CHAT)
    mock_server.configure(reply="Changed reply")
    body = post(http, "/v1/chat/completions", CHAT).json()
    assert body["choices"][0]["message"]["content"] == "Changed reply"
    assert [r.connection_id for r in mock_server.requests] == [1, 1]


def test_chat_tool_call_json_and_stream(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """With tools offered and tool_call set, OpenAI replies with tool_calls, JSON and stream."""
    mock_server.configure(tool_call="get_weather", tool_arguments={"city": "Paris"})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = post(http, "/v1/chat/completions", {**CHAT, "tools": tools}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

    events = sse(post(http, "/v1/chat/completions", {**CHAT, "tools": tools, "stream": True}).data)
    chunks = [json.loads(d) for _, d in events[:-1]]
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"]["name"] == "get_weather"
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[:-1]
    )
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_needs_tools_in_the_request(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """Without a tools list the reply is plain text even when tool_call is configured."""
    mock_server.configure(tool_call="get_weather")
    body = post(http, "/v1/chat/completions", CHAT).json()
    assert body["choices"][0]["message"]["content"] == DEFAULT_REPLY


def test_completions_json_and_stream(http: urllib3.HTTPConnectionPool) -> None:
    """The legacy completions endpoint answers text_completion JSON and SSE ending in [DONE]."""
    body = post(http, "/v1/completions", {"model": "m", "prompt": "once upon"}).json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == DEFAULT_REPLY
    assert body["usage"]["prompt_tokens"] == 2

    r = post(http, "/v1/completions", {"model": "m", "prompt": "once upon", "stream": True})
    events = sse(r.data)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == DEFAULT_REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_embeddings_are_deterministic_one_per_input(http: urllib3.HTTPConnectionPool) -> None:
    """Embeddings: one unit vector per input, in order, the same for the same text."""
    payload = {"model": "e", "input": ["alpha", "beta", "alpha"]}
    body = post(http, "/v1/embeddings", payload).json()
    assert body["object"] == "list"
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    assert len(vectors) == 3
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert post(http, "/v1/embeddings", payload).json()["data"][1]["embedding"] == vectors[1]


def test_embedding_dimension_setting_request_and_base64(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """embedding_dim sets the length, a request's dimensions overrides it, base64 packs floats."""
    mock_server.configure(embedding_dim=32)
    single = post(http, "/v1/embeddings", {"model": "e", "input": "x"}).json()
    assert len(single["data"][0]["embedding"]) == 32
    asked = post(http, "/v1/embeddings", {"model": "e", "input": "x", "dimensions": 4}).json()
    assert len(asked["data"][0]["embedding"]) == 4
    packed = post(
        http, "/v1/embeddings", {"model": "e", "input": "x", "encoding_format": "base64"}
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    floats = struct.unpack("<32f", raw)
    assert floats == pytest.approx(single["data"][0]["embedding"], abs=1e-6)


def test_models_lists_configured_models_in_both_shapes(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """GET /v1/models lists the models, OpenAI-shaped or Anthropic-shaped by header."""
    mock_server.configure(models=("a", "b"))
    openai = http.request("GET", "/v1/models").json()
    assert [m["id"] for m in openai["data"]] == ["a", "b"]
    assert openai["object"] == "list"
    anthropic = http.request("GET", "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert anthropic.json()["data"][0]["type"] == "model"
    assert anthropic.json()["has_more"] is False


def test_anthropic_message_json(http: urllib3.HTTPConnectionPool) -> None:
    """An Anthropic message has its shape, a request-id header and end_turn."""
    r = post(http, "/v1/messages", MESSAGES, **{"anthropic-version": "2023-06-01"})
    assert r.status == 200
    assert r.headers["request-id"].startswith("req_")
    assert "x-request-id" not in r.headers
    body = r.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-test"
    assert body["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 5, "output_tokens": 5}


def test_anthropic_max_tokens_stop_reason(http: urllib3.HTTPConnectionPool) -> None:
    """A max_tokens cut ends an Anthropic message with stop_reason max_tokens."""
    body = post(http, "/v1/messages", {**MESSAGES, "max_tokens": 1}).json()
    assert body["content"][0]["text"] == "Hello"
    assert body["stop_reason"] == "max_tokens"


def test_anthropic_stream_has_the_real_event_sequence(http: urllib3.HTTPConnectionPool) -> None:
    """A streamed message sends Anthropic's events, each with event: and data: lines."""
    r = post(http, "/v1/messages", {**MESSAGES, "stream": True})
    assert r.headers["transfer-encoding"] == "chunked"
    events = sse(r.data)
    names = [name for name, _ in events]
    words = len(DEFAULT_REPLY.split())
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(d) for _, d in events]
    assert all(d["type"] == name for d, name in zip(datas, names, strict=True))
    assert datas[0]["message"]["id"].startswith("msg_")
    assert datas[0]["message"]["stop_reason"] is None
    text = "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta")
    assert text == DEFAULT_REPLY
    assert datas[-2]["delta"]["stop_reason"] == "end_turn"
    assert datas[-2]["usage"] == {"output_tokens": words}


def test_anthropic_tool_use_json_and_stream(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """With tools and tool_call, Anthropic answers a tool_use block (JSON) and input_json deltas."""
    mock_server.configure(tool_call="lookup", tool_arguments='{"q": "llm pools"}')
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    body = post(http, "/v1/messages", {**MESSAGES, "tools": tools}).json()
    block = body["content"][0]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("lookup", {"q": "llm pools"})
    assert body["stop_reason"] == "tool_use"

    events = sse(post(http, "/v1/messages", {**MESSAGES, "tools": tools, "stream": True}).data)
    datas = [json.loads(d) for _, d in events]
    assert datas[1]["content_block"]["type"] == "tool_use"
    partial = "".join(
        d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta"
    )
    assert json.loads(partial) == {"q": "llm pools"}
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "model"),
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/embeddings", {"model": "m", "input": 5}, "input"),
        ("/v1/completions", {"model": "m"}, "prompt"),
    ],
)
def test_openai_invalid_requests_get_openai_400(
    http: urllib3.HTTPConnectionPool, path: str, payload: dict[str, Any], param: str
) -> None:
    """A request missing a required field gets OpenAI's 400 error body naming the param."""
    r = post(http, path, payload)
    assert r.status == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert r.headers["x-request-id"]


def test_anthropic_missing_max_tokens_gets_anthropic_400(http: urllib3.HTTPConnectionPool) -> None:
    """Anthropic requires max_tokens; the error body is Anthropic-shaped."""
    payload = {k: v for k, v in MESSAGES.items() if k != "max_tokens"}
    r = post(http, "/v1/messages", payload)
    assert r.status == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    assert r.headers["request-id"]


def test_bad_json_unknown_path_and_wrong_method(http: urllib3.HTTPConnectionPool) -> None:
    """Bad JSON is a 400, an unknown path a 404, a wrong method a 405; the connection lives."""
    r = http.request("POST", "/v1/chat/completions", body=b"{not json")
    assert r.status == 400
    assert http.request("GET", "/v1/nothing").status == 404
    assert http.request("GET", "/v1/chat/completions").status == 405
    assert post(http, "/v1/chat/completions", CHAT).status == 200
    assert http.num_connections == 1


def test_chunked_request_body_and_expect_continue(mock_server: MockLLMServer) -> None:
    """A chunked request body is read whole, and Expect: 100-continue gets a 100 first."""
    pool = urllib3.HTTPConnectionPool("127.0.0.1", mock_server.port, retries=False)
    try:
        body = iter([json.dumps(CHAT).encode()[:10], json.dumps(CHAT).encode()[10:]])
        r = pool.urlopen("POST", "/v1/chat/completions", body=body, chunked=True)
        assert r.status == 200
        assert mock_server.requests[-1].json == CHAT
    finally:
        pool.close()
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", mock_server.port, timeout=5)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(CHAT),
            headers={"Expect": "100-continue"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["object"] == "chat.completion"
    finally:
        conn.close()


def test_recorded_request_carries_what_was_sent(
    mock_server: MockLLMServer, http: urllib3.HTTPConnectionPool
) -> None:
    """The record keeps method, path, query, headers, raw and parsed body, ids and no fault."""
    post(http, "/v1/chat/completions?trace=1", {**CHAT, "stream": True}, authorization="Bearer k")
    (record,) = mock_server.requests
    assert (record.method, record.path, record.query) == ("POST", "/v1/chat/completions", "trace=1")
    assert record.header("Authorization") == "Bearer k"
    assert record.json == {**CHAT, "stream": True}
    assert json.loads(record.body) == record.json
    assert record.stream is True
    assert (record.connection_id, record.index_on_connection) == (1, 1)
    assert record.fault is None
    assert record.timestamp > 0
