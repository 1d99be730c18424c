"""The calls users make: ``chat``, ``complete``, ``embed`` and ``models``.

Each call describes itself as one function, ``build(provider, model) ->
(request, parse)``, and hands it to the request path
(:meth:`~llmpool.request_path.RequestPath._call`): a plain client builds
once, with its provider; a client over an endpoint group builds again for
another endpoint's provider or a fallback model. :class:`~llmpool.Client`
inherits these methods; thread-safe as the client is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Unpack, overload

from llmpool.group_path import GroupPath
from llmpool.models import ChatCompletion, Embeddings, Request
from llmpool.params import CallKwargs, split_kwargs
from llmpool.providers import Provider
from llmpool.streaming import Stream

__all__ = ["Calls"]


class Calls(GroupPath):
    """The public calls of :class:`~llmpool.Client` (which sets up what they use)."""

    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: Literal[False] = False,
        **kwargs: Unpack[CallKwargs],
    ) -> ChatCompletion: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: Literal[True],
        **kwargs: Unpack[CallKwargs],
    ) -> Stream: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool,
        **kwargs: Unpack[CallKwargs],
    ) -> ChatCompletion | Stream: ...
    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
        **kwargs: Unpack[CallKwargs],
    ) -> ChatCompletion | Stream:
        """A chat completion: a :class:`~llmpool.ChatCompletion`, or with
        ``stream=True`` a :class:`~llmpool.streaming.Stream` of
        :class:`~llmpool.ChatChunk` (use it in a ``with`` block).

        Keyword arguments (:class:`~llmpool.params.CallKwargs`): the
        generation parameters of :class:`~llmpool.params.CallParams`
        (``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``,
        ``tools``, ``tool_choice``, ``response_format``, ``user``,
        ``extra_body``) and the call's own ``timeout``, ``deadline``,
        ``extra_headers`` and ``idempotency_key``.
        """
        params, options = split_kwargs("chat", kwargs)

        def build(p: Provider, m: str | None) -> tuple[Request, Callable[..., Any]]:
            return p.build_chat(m or model, messages, stream=stream, params=params), p.parse_chat

        result: ChatCompletion | Stream = self._call("chat", model, build, **options)
        return result

    @overload
    def complete(
        self,
        model: str,
        prompt: str,
        *,
        stream: Literal[False] = False,
        **kwargs: Unpack[CallKwargs],
    ) -> ChatCompletion: ...
    @overload
    def complete(
        self, model: str, prompt: str, *, stream: Literal[True], **kwargs: Unpack[CallKwargs]
    ) -> Stream: ...
    @overload
    def complete(
        self, model: str, prompt: str, *, stream: bool, **kwargs: Unpack[CallKwargs]
    ) -> ChatCompletion | Stream: ...
    def complete(
        self, model: str, prompt: str, *, stream: bool = False, **kwargs: Unpack[CallKwargs]
    ) -> ChatCompletion | Stream:
        """A text completion (OpenAI ``/completions``): a ChatCompletion whose
        message holds the text, or a Stream with ``stream=True``. Takes the
        keyword arguments of :meth:`chat` (``tools``, ``tool_choice`` and
        ``response_format`` do not apply)."""
        params, options = split_kwargs("complete", kwargs)

        def build(p: Provider, m: str | None) -> tuple[Request, Callable[..., Any]]:
            built = p.build_complete(m or model, prompt, stream=stream, params=params)
            return built, p.parse_complete

        result: ChatCompletion | Stream = self._call("complete", model, build, **options)
        return result

    def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Embeddings:
        """Embeddings for *input* (one vector per string, in order)."""
        inputs = 1 if isinstance(input, str) else len(input)

        def build(p: Provider, m: str | None) -> tuple[Request, Callable[..., Any]]:
            parse = functools.partial(p.parse_embed_checked, inputs=inputs)
            return p.build_embed(m or model, input), parse

        result: Embeddings = self._call(
            "embed", model, build, timeout=timeout, deadline=deadline, extra_headers=extra_headers
        )
        return result

    def models(self, *, timeout: float | None = None) -> tuple[str, ...]:
        """The model names the server offers."""

        def build(p: Provider, _model: str | None) -> tuple[Request, Callable[..., Any]]:
            return p.build_models(), p.parse_models

        names: tuple[str, ...] = self._call("models", None, build, timeout=timeout)
        return names
