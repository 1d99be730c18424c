"""A call's parameters: what it asks of the model, and how the call is made.

:class:`CallParams` is the one value that carries a chat's or a text
completion's generation parameters from ``Client.chat`` / ``Client.complete``
to the provider, which maps each field to its API (OpenAI passes most by
name; Anthropic renames ``stop`` to ``stop_sequences``, maps ``tools`` and
``tool_choice``, puts ``user`` in ``metadata``). Adding a parameter touches
this module (the value and the keyword arguments below, kept equal by a test)
and the provider mappings, nothing else.

:class:`CallKwargs` types the keyword arguments of ``chat`` and ``complete``
for mypy and editors: the parameters above, plus the options of the call
itself (``timeout``, ``deadline``, ``extra_headers``, ``idempotency_key``),
which the client keeps and never sends to the provider.

Values; thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import attrs

__all__ = ["CALL_OPTIONS", "NO_PARAMS", "CallKwargs", "CallParams", "split_kwargs"]


@attrs.frozen(kw_only=True)
class CallParams:
    """What a chat or text completion asks of the model, beside the model and
    its input. Immutable; None means "not sent" (the server's default)."""

    #: Sampling temperature.
    temperature: float | None = None
    #: Nucleus sampling mass.
    top_p: float | None = None
    #: Most tokens to generate (Anthropic requires one: the provider's default).
    max_tokens: int | None = None
    #: One stop sequence or several.
    stop: str | Sequence[str] | None = None
    #: Seed for reproducible sampling (OpenAI-compatible servers).
    seed: int | None = None
    #: Tools the model may call, OpenAI-style (``{"type": "function", ...}``).
    tools: Sequence[Mapping[str, Any]] | None = None
    #: Which tool to call: ``"auto"``, ``"none"``, ``"required"`` or a named function.
    tool_choice: str | Mapping[str, Any] | None = None
    #: Output format (``{"type": "json_object"}``; OpenAI-compatible servers).
    response_format: Mapping[str, Any] | None = None
    #: An end-user id for the provider's abuse monitoring.
    user: str | None = None
    #: Fields merged into the JSON body as they are (they win).
    extra_body: Mapping[str, Any] | None = None


class CallKwargs(TypedDict, total=False):
    """The keyword arguments of ``Client.chat`` and ``Client.complete``."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | Sequence[str] | None
    seed: int | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    response_format: Mapping[str, Any] | None
    user: str | None
    extra_body: Mapping[str, Any] | None
    #: Bounds each attempt's connect and reads (seconds).
    timeout: float | None
    #: Bounds the whole call (seconds).
    deadline: float | None
    #: Headers for this call only.
    extra_headers: Mapping[str, str] | None
    #: The Idempotency-Key every attempt of this call sends.
    idempotency_key: str | None


#: The keyword arguments that shape the call, not the request body.
CALL_OPTIONS = frozenset({"timeout", "deadline", "extra_headers", "idempotency_key"})

_PARAM_NAMES = frozenset(attrs.fields_dict(CallParams))
#: No parameters: every field None (the default of the provider methods).
NO_PARAMS = CallParams()


def split_kwargs(what: str, kwargs: Mapping[str, Any]) -> tuple[CallParams, dict[str, Any]]:
    """``(params, call options)`` from the keyword arguments of *what*
    (``"chat"``); an unknown name is a TypeError, as for any Python call."""
    if not kwargs:
        return NO_PARAMS, {}
    unknown = set(kwargs) - _PARAM_NAMES - CALL_OPTIONS
    if unknown:
        raise TypeError(f"{what}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    params = CallParams(**{k: v for k, v in kwargs.items() if k in _PARAM_NAMES})
    return params, {k: v for k, v in kwargs.items() if k in CALL_OPTIONS}
