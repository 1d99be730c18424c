"""Provider loading and the base contract shared by every provider."""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llmpool import exceptions as exc
from llmpool.models import ChatChunk, ChatCompletion, Request
from llmpool.params import NO_PARAMS, CallParams
from llmpool.providers import Provider, StreamParser, available_providers, load_provider
from llmpool.providers.anthropic import AnthropicProvider
from llmpool.providers.base import MessageLike, merge_headers
from llmpool.providers.openai import OpenAIProvider
from llmpool.streaming import SSEEvent

SECRET = "sk-very-secret-key-9f8e7d"


class EchoParser(StreamParser):
    def feed(self, event: SSEEvent) -> ChatChunk | None:
        if event.data == "end":
            self._done = True
            return None
        return self.chunk(event.data)


class EchoProvider(Provider):
    """The smallest provider: only the abstract methods."""

    name = "echo"

    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        params: CallParams = NO_PARAMS,
    ) -> Request:
        return self.post("/echo", {"model": model, "messages": list(messages)}, stream=stream)

    def parse_chat(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        raise NotImplementedError

    def stream_parser(self, *, request_id: str | None = None) -> EchoParser:
        return EchoParser(request_id=request_id)


# --------------------------------------------------------------------------- loading


def test_builtin_providers_are_listed() -> None:
    """Both built-in providers are installed entry points."""
    assert {"openai", "anthropic"} <= set(available_providers())
    assert list(available_providers()) == sorted(available_providers())


@pytest.mark.parametrize(
    ("name", "cls"), [("openai", OpenAIProvider), ("anthropic", AnthropicProvider)]
)
def test_load_by_name(name: str, cls: type[Provider]) -> None:
    """A provider loads by entry-point name with its options; each load is a new instance."""
    first = load_provider(name, api_key=SECRET, default_headers={"X-Team": "a"})
    second = load_provider(name, api_key=SECRET)
    assert type(first) is cls
    assert first.name == name
    assert first is not second
    assert first.headers()["X-Team"] == "a"


def test_unknown_provider_lists_installed_names() -> None:
    """An unknown name raises ConfigError naming what is installed."""
    with pytest.raises(exc.ConfigError) as info:
        load_provider("openia")
    text = str(info.value)
    assert "openia" in text
    assert "anthropic" in text and "openai" in text
    assert info.value.key == "provider"


def test_unknown_option_raises_config_error() -> None:
    """An option the provider does not take raises ConfigError naming it."""
    with pytest.raises(exc.ConfigError) as info:
        load_provider("openai", api_key=SECRET, temprature=1)
    assert "temprature" in str(info.value)


def test_bad_option_value_keeps_the_provider_error() -> None:
    """A provider's own ConfigError comes through stevedore unchanged."""
    with pytest.raises(exc.ConfigError) as info:
        load_provider("anthropic", default_max_tokens=0)
    assert info.value.key == "default_max_tokens"


def test_instance_and_subclass_are_accepted() -> None:
    """A Provider instance is used as is; a subclass is instantiated with the options."""
    instance = EchoProvider(api_key=SECRET)
    assert load_provider(instance) is instance
    built = load_provider(EchoProvider, api_key=SECRET)
    assert isinstance(built, EchoProvider)
    assert built.api_key == SECRET


def test_options_with_an_instance_are_refused() -> None:
    """Options cannot be applied to an already built provider."""
    with pytest.raises(exc.ConfigError):
        load_provider(EchoProvider(), api_key="x")


@pytest.mark.parametrize("value", [42, "", None, object, str])
def test_bad_provider_argument(value: object) -> None:
    """Something that is not a name, Provider class or instance raises ConfigError."""
    with pytest.raises(exc.ConfigError):
        load_provider(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the base contract


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider, EchoProvider])
def test_api_key_never_in_repr_or_str(cls: type[Provider]) -> None:
    """The API key appears in neither repr nor str of a provider or its requests."""
    provider = cls(api_key=SECRET)
    assert SECRET not in repr(provider)
    assert SECRET not in str(provider)
    assert "***" in repr(provider)
    request = provider.build_chat("m", [{"role": "user", "content": "hi"}])
    assert SECRET not in repr(request)
    assert SECRET not in repr(cls())


def test_abstract_provider_cannot_be_built() -> None:
    """Provider is abstract: a subclass must implement the chat methods."""
    with pytest.raises(TypeError):
        Provider()  # type: ignore[abstract]


def test_api_key_type_is_checked_without_echoing_it() -> None:
    """A non-string key raises ConfigError that does not contain the value."""
    with pytest.raises(exc.ConfigError) as info:
        OpenAIProvider(api_key=b"sk-bytes-key")  # type: ignore[arg-type]
    assert "sk-bytes-key" not in str(info.value)
    assert info.value.key == "api_key"


@pytest.mark.parametrize("headers", [{"X-A": 1}, [("X-A", "b")], "X-A: b"])
def test_bad_default_headers(headers: object) -> None:
    """default_headers must map names to strings."""
    with pytest.raises(exc.ConfigError) as info:
        OpenAIProvider(default_headers=headers)  # type: ignore[arg-type]
    assert info.value.key == "default_headers"


def test_minimal_provider_gets_defaults() -> None:
    """A provider with only the abstract methods has headers, models and refuses the rest."""
    provider = EchoProvider()
    assert provider.headers()["User-Agent"].startswith("llmpool/")
    assert provider.build_models().path == "/models"
    assert provider.parse_models(b'{"data": [{"id": "a"}]}') == ("a",)
    for call in (
        lambda: provider.build_embed("m", "x"),
        lambda: provider.parse_embed(b"{}", request_id=None),
        lambda: provider.build_complete("m", "x"),
        lambda: provider.parse_complete(b"{}", request_id=None),
    ):
        with pytest.raises(exc.ConfigError, match="echo provider does not support"):
            call()
    err = provider.parse_error(
        503, {"x-request-id": "r1", "retry-after": "1"}, b'{"error": "busy"}'
    )
    assert isinstance(err, exc.InternalServerError)
    assert (err.message, err.request_id, err.retry_after) == ("busy", "r1", 1.0)


def test_stream_parser_base_yields_chunks_and_done() -> None:
    """The StreamParser base turns events into chunks and tracks the done flag."""
    parser = EchoProvider().stream_parser()
    chunks = [parser.feed(SSEEvent(data=data)) for data in ("a", "b", "c")]
    assert "".join(c.delta for c in chunks if c is not None) == "abc"
    assert not parser.done
    parser.feed(SSEEvent(data="end"))
    assert parser.done
    assert parser.finish_reason is None and parser.usage is None


def test_merge_headers_is_case_insensitive() -> None:
    """Merging replaces a header whatever the case of its name."""
    merged = merge_headers({"Accept": "a", "X-B": "b"}, {"accept": "c"})
    assert merged == {"X-B": "b", "accept": "c"}


def test_one_provider_serves_many_threads() -> None:
    """Concurrent builds from one instance give independent, correct requests."""
    provider = AnthropicProvider(api_key=SECRET)

    def build(i: int) -> tuple[int, Any]:
        req = provider.build_chat(
            f"m{i}",
            [{"role": "system", "content": f"s{i}"}, {"role": "user", "content": str(i)}],
            params=CallParams(max_tokens=i + 1),
        )
        return i, json.loads(req.body or b"")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [f.result() for f in [pool.submit(build, i) for i in range(200)]]
    for i, payload in results:
        assert payload["model"] == f"m{i}"
        assert payload["system"] == f"s{i}"
        assert payload["max_tokens"] == i + 1
        assert payload["messages"] == [{"role": "user", "content": str(i)}]


def test_with_headers_returns_a_new_provider() -> None:
    """with_headers() adds headers to a copy and leaves the original alone."""
    provider = OpenAIProvider(api_key=SECRET, default_headers={"X-A": "1"})
    clone = provider.with_headers({"x-a": "2", "X-B": "3"})
    assert type(clone) is OpenAIProvider
    assert clone.headers()["x-a"] == "2" and clone.headers()["X-B"] == "3"
    assert clone.headers()["Authorization"] == f"Bearer {SECRET}"
    assert provider.headers()["X-A"] == "1" and "X-B" not in provider.headers()
    with pytest.raises(exc.ConfigError):
        provider.with_headers({"X-C": 4})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- header values


BAD_KEYS = [SECRET + "\n", SECRET + "\r\n", "sk-a\rb-" + SECRET, SECRET + "\x00", SECRET + "\u2603"]


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
@pytest.mark.parametrize("key", BAD_KEYS)
def test_api_key_that_cannot_be_a_header_is_refused_without_echoing_it(
    cls: type[Provider], key: str
) -> None:
    """An api_key with CR, LF, NUL or non-Latin-1 raises ConfigError("api_key") hiding the value."""
    with pytest.raises(exc.ConfigError) as info:
        cls(api_key=key)
    err = info.value
    assert err.key == "api_key"
    for text in (str(err), repr(err), repr(pickle.dumps(err)), repr(err.__cause__)):
        assert SECRET not in text and "sk-a" not in text


@pytest.mark.parametrize(
    "headers",
    [{"X-Trace": "a\r\nX-Injected: 1"}, {"X-Trace": "v\n"}, {"Bad Name": "v"}, {"X-A": "\x00"}],
)
def test_default_headers_that_cannot_be_sent_are_refused(headers: dict[str, str]) -> None:
    """default_headers and with_headers() refuse CR/LF/NUL values and bad names."""
    with pytest.raises(exc.ConfigError) as info:
        OpenAIProvider(api_key=SECRET, default_headers=headers)
    assert info.value.key == "default_headers"
    with pytest.raises(exc.ConfigError) as info:
        OpenAIProvider(api_key=SECRET).with_headers(headers)
    assert info.value.key == "default_headers"
    assert "a\r\nX-Injected" not in str(info.value)


def test_secret_headers_are_declared_per_provider() -> None:
    """Each provider declares its own credential header names, lower case."""
    assert Provider.secret_headers == frozenset()
    assert EchoProvider.secret_headers == frozenset()
    assert OpenAIProvider.secret_headers == frozenset({"authorization"})
    assert AnthropicProvider.secret_headers == frozenset({"x-api-key"})
    for cls in (OpenAIProvider, AnthropicProvider):
        sent = {name.lower() for name in cls(api_key=SECRET).headers()}
        assert cls.secret_headers <= sent


def test_provider_option_headers_are_checked() -> None:
    """A provider option that becomes a header (organization) may not hold a newline."""
    with pytest.raises(exc.ConfigError) as info:
        OpenAIProvider(api_key=SECRET, organization="org-1\n")
    assert info.value.key == "provider_options"
    assert "OpenAI-Organization" in str(info.value)


# --------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize(
    ("payload", "key", "what"),
    [
        ({"model": "m", "messages": [{"content": b"xyz"}]}, "messages", "bytes"),
        ({"model": "m", "temperature": float("nan")}, "temperature", "Out of range"),
        ({"model": "m", "x": float("-inf")}, "x", "Out of range"),
        ({"model": "m", "x": "\ud800"}, "x", "surrogate"),
        ({"model": "m", "x": {(1, 2): "tuple key"}}, "x", "keys must be"),
    ],
)
def test_request_body_that_is_not_json_raises_config_error(
    payload: dict[str, Any], key: str, what: str
) -> None:
    """Request.body refuses what strict JSON cannot hold, naming the field, not the content."""
    request = Request(method="POST", path="/x", payload=payload)
    with pytest.raises(exc.ConfigError) as info:
        request.body  # noqa: B018
    assert info.value.key == key
    assert what in str(info.value)
    assert "xyz" not in str(info.value) and "tuple key" not in str(info.value)


def test_provider_post_encodes_at_build_time() -> None:
    """A provider's request fails when built, and replacing its headers keeps the encoded body."""
    provider = OpenAIProvider(api_key=SECRET)
    with pytest.raises(exc.ConfigError) as info:
        provider.build_chat("m", [{"role": "user", "content": b"x"}])
    assert info.value.key == "messages"
    request = provider.build_chat("m", [{"role": "user", "content": "hi"}])
    body = request.body
    assert request.replace(headers={"X-A": "1"}).body is body
    assert request.replace(payload={"model": "n"}).body == b'{"model":"n"}'
