"""Call parameters: one value from Client.chat to the provider, mapped per API."""

from __future__ import annotations

import typing

import attrs
import pytest

from llmpool import exceptions as exc
from llmpool.params import CALL_OPTIONS, CallKwargs, CallParams, split_kwargs
from llmpool.providers.anthropic import AnthropicProvider
from llmpool.providers.openai import OpenAIProvider

HI = [{"role": "user", "content": "hi"}]
ALL = CallParams(
    temperature=0.3,
    top_p=0.9,
    max_tokens=7,
    stop="END",
    seed=42,
    tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    tool_choice={"type": "function", "function": {"name": "f"}},
    response_format={"type": "json_object"},
    user="u-1",
    extra_body={"logprobs": True},
)


def test_keyword_arguments_match_the_value() -> None:
    """CallKwargs (typing) names exactly CallParams' fields plus the call options."""
    typed = set(typing.get_type_hints(CallKwargs))
    assert typed == set(attrs.fields_dict(CallParams)) | CALL_OPTIONS


def test_split_keeps_call_options_apart_and_refuses_unknown_names() -> None:
    """split_kwargs separates the call's options; a misspelt name is a TypeError."""
    params, options = split_kwargs("chat", {"temperature": 0.1, "timeout": 3.0})
    assert params == CallParams(temperature=0.1) and options == {"timeout": 3.0}
    with pytest.raises(TypeError, match="temprature"):
        split_kwargs("chat", {"temprature": 0.1})


def test_openai_sends_every_parameter_by_its_name() -> None:
    """OpenAI chat sends each CallParams field under its own name, stop as a list."""
    payload = OpenAIProvider().build_chat("m", HI, params=ALL).payload
    assert payload is not None
    for name in ("temperature", "top_p", "max_tokens", "seed", "tool_choice", "user"):
        assert payload[name] == getattr(ALL, name)
    assert payload["response_format"] == {"type": "json_object"}
    assert payload["stop"] == ["END"] and payload["tools"][0]["function"]["name"] == "f"
    assert payload["logprobs"] is True


def test_openai_completions_refuse_chat_only_parameters() -> None:
    """tools, tool_choice and response_format do not apply to /completions."""
    provider = OpenAIProvider()
    payload = provider.build_complete("m", "x", params=CallParams(seed=1, top_p=0.5)).payload
    assert payload is not None and payload["seed"] == 1 and payload["top_p"] == 0.5
    with pytest.raises(exc.ConfigError) as info:
        provider.build_complete("m", "x", params=CallParams(tool_choice="auto"))
    assert info.value.key == "tool_choice"


def test_anthropic_maps_what_it_has_and_refuses_what_it_has_not() -> None:
    """Anthropic: stop_sequences, tool_choice and metadata.user_id; seed is a ConfigError."""
    provider = AnthropicProvider()
    params = attrs.evolve(ALL, seed=None, response_format=None)
    payload = provider.build_chat("c", HI, params=params).payload
    assert payload is not None
    assert payload["stop_sequences"] == ["END"] and payload["top_p"] == 0.9
    assert payload["tool_choice"] == {"type": "tool", "name": "f"}
    assert payload["metadata"] == {"user_id": "u-1"}
    assert payload["max_tokens"] == 7
    for choice, mapped in [("auto", "auto"), ("none", "none"), ("required", "any")]:
        body = provider.build_chat("c", HI, params=CallParams(tool_choice=choice)).payload
        assert body is not None and body["tool_choice"] == {"type": mapped}
    for name in ("seed", "response_format"):
        with pytest.raises(exc.ConfigError) as info:
            provider.build_chat(
                "c", HI, params=attrs.evolve(CallParams(), **{name: ALL.__getattribute__(name)})
            )
        assert info.value.key == name
