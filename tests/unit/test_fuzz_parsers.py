"""Property-based tests: arbitrary bytes and JSON never escape llmpool's error tree.

Fed to both providers' response parsers (chat, complete, embeddings, models,
errors), their stream-event parsers, the SSE decoder and ``load_config``:
anything but an :class:`~llmpool.exceptions.LLMPoolError` escaping is a bug,
and so is a hang (each example is bounded by hypothesis' deadline). CI runs
the ``ci`` profile: 300 examples per test.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmpool.config_loading import load_config
from llmpool.exceptions import LLMPoolError
from llmpool.providers.anthropic import AnthropicProvider
from llmpool.providers.openai import OpenAIProvider
from llmpool.streaming import SSEDecoder, SSEEvent

settings.register_profile(
    "ci", max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=2000)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

PROVIDERS = [OpenAIProvider(api_key="k"), AnthropicProvider(api_key="k")]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)

#: Shapes close to real answers, with arbitrary values inside, to reach deep code.
near_answers = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "object": json_values,
        "model": json_values,
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": json_values,
                    "message": st.dictionaries(
                        st.sampled_from(["role", "content", "tool_calls"]), json_values
                    ),
                    "delta": st.dictionaries(
                        st.sampled_from(["role", "content", "tool_calls"]), json_values
                    ),
                    "finish_reason": json_values,
                    "text": json_values,
                },
            ),
            max_size=3,
        ),
        "usage": st.dictionaries(
            st.sampled_from(
                [
                    "prompt_tokens",
                    "completion_tokens",
                    "total_tokens",
                    "input_tokens",
                    "output_tokens",
                ]
            ),
            json_values,
        ),
        "data": st.lists(
            st.dictionaries(st.sampled_from(["embedding", "index", "id"]), json_values), max_size=3
        ),
        "content": st.lists(
            st.dictionaries(st.sampled_from(["type", "text", "id", "name", "input"]), json_values),
            max_size=3,
        ),
        "type": st.sampled_from(
            [
                "message",
                "error",
                "message_start",
                "content_block_delta",
                "message_delta",
                "message_stop",
            ]
        )
        | json_values,
        "error": json_values,
        "stop_reason": json_values,
    },
)

bodies = (
    st.binary(max_size=512)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_answers.map(lambda v: json.dumps(v).encode())
)


def _only_llmpool_errors(call: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(LLMPoolError):
        call(*args, **kwargs)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
@given(body=bodies)
def test_response_parsers_raise_only_llmpool_errors(provider: Any, body: bytes) -> None:
    """parse_chat/complete/embed/models and parse_error never leak a foreign exception."""
    for parse in (
        provider.parse_chat,
        provider.parse_complete,
        provider.parse_embed,
        provider.parse_models,
    ):
        try:
            parse(body, request_id="r")
        except LLMPoolError:
            pass
        except NotImplementedError:  # an operation the provider does not offer
            pass
    err = provider.parse_error(500, {"x-request-id": "r"}, body)
    assert isinstance(err, LLMPoolError)


events = st.builds(
    SSEEvent,
    event=st.none()
    | st.sampled_from(
        ["message_start", "content_block_delta", "message_delta", "message_stop", "error", "ping"]
    )
    | st.text(max_size=10),
    data=st.text(max_size=200)
    | json_values.map(json.dumps)
    | near_answers.map(json.dumps)
    | st.just("[DONE]"),
)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
@given(stream=st.lists(events, max_size=12))
def test_stream_parsers_raise_only_llmpool_errors(provider: Any, stream: list[SSEEvent]) -> None:
    """A stream parser fed arbitrary events returns chunks or raises llmpool's errors only."""
    parser = provider.stream_parser(request_id="r")
    try:
        for event in stream:
            parser.feed(event)
            if parser.done:
                break
    except LLMPoolError as err:
        assert getattr(err, "request_id", "r") == "r"


@given(pieces=st.lists(st.binary(max_size=300), max_size=20))
def test_sse_decoder_takes_any_bytes(pieces: list[bytes]) -> None:
    """The SSE decoder accepts any bytes in any pieces, or raises llmpool's errors only."""
    decoder = SSEDecoder()
    try:
        for piece in pieces:
            for event in decoder.feed(piece):
                assert isinstance(event.data, str)
        decoder.flush()
    except LLMPoolError:
        pass


@given(
    data=st.dictionaries(
        st.sampled_from(["client", "connection_pool", "memory", "plugins", "other"]),
        json_values,
        max_size=4,
    )
)
def test_load_config_from_any_dict_raises_only_config_errors(data: dict[str, Any]) -> None:
    """load_config on arbitrary data gives a config or llmpool's error, nothing else."""
    _only_llmpool_errors(load_config, data, environ={})


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400) | json_values.map(json.dumps))
def test_load_config_from_any_yaml_text_raises_only_config_errors(
    tmp_path: Path, text: str
) -> None:
    """load_config on an arbitrary YAML file gives a config or llmpool's error, nothing else."""
    path = tmp_path / "llmpool.yaml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    _only_llmpool_errors(load_config, str(path), environ={})
