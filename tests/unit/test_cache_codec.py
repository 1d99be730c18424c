"""The shared cache's codec: results travel as JSON and come back equal, never unpickled."""

from __future__ import annotations

import pickle

from llmpool.models import ChatCompletion, Choice, Embeddings, Message, ToolCall, Usage
from llmpool.plugins.builtin import cache_codec


def test_chat_and_embeddings_round_trip() -> None:
    """A completion with tool calls and an embeddings result decode equal, raw included."""
    chat = ChatCompletion(
        id="c1",
        model="m",
        choices=(
            Choice(
                index=0,
                message=Message(
                    role="assistant",
                    content=None,
                    tool_calls=(ToolCall(id="t", name="f", arguments="{}"),),
                ),
                finish_reason="tool_calls",
            ),
        ),
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
        created=5,
        request_id="r",
        raw={"id": "c1", "extra": [1, 2]},
    )
    embed = Embeddings(vectors=((0.5, 1.0), (2.0, 3.0)), model="e", raw={"x": 1})
    for value in (chat, embed):
        data = cache_codec.encode(value)
        assert data is not None
        back = cache_codec.decode(data)
        assert back == value and back.raw == value.raw


def test_anything_else_is_not_shared_and_foreign_bytes_are_misses() -> None:
    """Other types are not encoded; a pickle or another format decodes to None."""
    assert cache_codec.encode({"a": 1}) is None
    assert cache_codec.decode(pickle.dumps({"a": 1})) is None
    assert cache_codec.decode(b'[99, "chat", {}]') is None
    assert cache_codec.decode(b'[1, "chat", {"usage": {}}]') is None
