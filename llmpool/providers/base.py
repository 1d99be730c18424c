"""The provider contract: build requests, parse bodies, never touch the network.

A provider turns a call's arguments into a :class:`~llmpool.models.Request`
and a server's bytes into result values. The client does the HTTP. One
provider instance serves every thread of a process: it is configured once
(headers precomputed) and keeps no per-call state. Per-stream state lives in
a :class:`StreamParser`, one per stream.

The helpers at the bottom (:func:`load_json`, :func:`response_shape`,
:func:`normalise_messages`, ...) are public so that third-party providers
report malformed bodies the same way the built-in ones do.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from llmpool._version import __version__
from llmpool.exceptions import (
    APIStatusError,
    ConfigError,
    InvalidResponse,
    LLMPoolError,
    StreamError,
    cap_request_id,
    error_for_status,
    excerpt,
)
from llmpool.models import (
    ChatChunk,
    ChatCompletion,
    Embeddings,
    Message,
    Request,
    ToolCall,
    Usage,
    encode_json,
)
from llmpool.redaction import check_header, check_headers
from llmpool.retry import get_header, parse_retry_after

if TYPE_CHECKING:
    from llmpool.streaming import SSEEvent

__all__ = [
    "SHAPE_ERRORS",
    "USER_AGENT",
    "MessageLike",
    "Provider",
    "StreamParser",
    "as_dict",
    "as_list",
    "check_api_key",
    "check_model",
    "checked_headers",
    "invalid_response",
    "load_json",
    "merge_headers",
    "message_dict",
    "normalise_messages",
    "opt_int",
    "opt_str",
    "opt_text",
    "parse_tool_calls",
    "parse_usage",
    "response_shape",
    "stop_list",
    "with_extra",
]

#: Sent on every request unless ``default_headers`` overrides it.
USER_AGENT = f"llmpool/{__version__}"

#: A chat message: an OpenAI-style dict, or a :class:`~llmpool.models.Message`
#: taken from an earlier result (for tool-call round trips).
MessageLike = Mapping[str, Any] | Message


class Provider(abc.ABC):
    """One LLM API dialect: request building and response parsing.

    Thread safety: one instance serves all threads. Everything is computed in
    ``__init__`` and never changed; methods only read it and build new values.
    The API key is kept out of ``repr`` and ``str``.

    Subclasses set :attr:`name`, implement :meth:`build_chat`,
    :meth:`parse_chat` and :meth:`stream_parser`, and usually
    :meth:`static_headers` (declaring a credential header of their own in
    :attr:`secret_headers`). Every header value is checked once, here: a
    CR, LF or NUL (a key read with its trailing newline) raises
    :class:`~llmpool.exceptions.ConfigError` naming the header, never the
    value. Provider-specific options are keyword arguments
    of the subclass's ``__init__``, set before calling ``super().__init__``;
    an option nobody consumed raises :class:`~llmpool.exceptions.ConfigError`.
    """

    #: The entry-point name (``openai``, ``anthropic``).
    name: ClassVar[str] = "provider"
    #: The base URL (with its ``/v1``) used when the client is given none.
    default_base_url: ClassVar[str | None] = None
    #: Response headers that carry the server's request id, in order.
    request_id_headers: ClassVar[tuple[str, ...]] = ("x-request-id", "request-id")
    #: The provider's own credential headers (lower case), beyond
    #: :data:`llmpool.redaction.SECRET_HEADERS`: never sent to another origin
    #: on a redirect, masked in configuration output and logs. A provider
    #: that sends its key in a header of its own declares it here.
    secret_headers: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        api_key: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        if options:
            names = ", ".join(sorted(options))
            raise ConfigError(
                f"unknown option(s) for provider {self.name!r}: {names}",
                key="provider_options",
                value=sorted(options),
            )
        self._api_key = check_api_key(api_key) or None
        base = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        static = self.static_headers()
        check_headers(static, key="provider_options")
        headers = merge_headers(base, static)
        self._headers = merge_headers(headers, checked_headers(default_headers))

    @property
    def api_key(self) -> str | None:
        """The API key (never shown by ``repr``)."""
        return self._api_key

    def __repr__(self) -> str:
        key = "'***'" if self._api_key else "None"
        return f"<{type(self).__name__} name={self.name!r} api_key={key}>"

    # ------------------------------------------------------------------ headers

    def static_headers(self) -> dict[str, str]:
        """The provider's own fixed headers: authentication, API version.

        Called once, from ``__init__``. The base class adds ``User-Agent``,
        ``Accept`` and ``Content-Type``; ``default_headers`` override all.
        """
        return {}

    def headers(self, *, stream: bool = False) -> dict[str, str]:
        """A fresh copy of every header a request sends (``Accept`` is
        ``text/event-stream`` for a stream)."""
        headers = dict(self._headers)
        if stream:
            headers["Accept"] = "text/event-stream"
        return headers

    def with_headers(self, headers: Mapping[str, str]) -> Provider:
        """A copy of this provider whose requests also send *headers* (which
        override the existing ones, names compared without case). The
        original is untouched, so both stay safe to share. A header that
        cannot be sent raises ConfigError (key ``default_headers``)."""
        clone = copy.copy(self)
        clone._headers = merge_headers(self._headers, checked_headers(headers))
        return clone

    def request_id(self, headers: Mapping[str, str]) -> str | None:
        """The server's request id from response *headers*, or None; cut to
        :data:`~llmpool.exceptions.MAX_REQUEST_ID_CHARS` characters."""
        for name in self.request_id_headers:
            value = get_header(headers, name)
            if value:
                return cap_request_id(value)
        return None

    # ------------------------------------------------------------------ requests

    def post(self, path: str, payload: Mapping[str, Any], *, stream: bool = False) -> Request:
        """A POST :class:`~llmpool.models.Request` of *payload* to *path*.

        The body is encoded here, once, so a payload that strict JSON cannot
        hold (a datetime, a set, bytes, NaN) raises ConfigError when the
        request is built, naming the field, and nothing is sent."""
        headers = self.headers(stream=stream)
        request = Request(method="POST", path=path, headers=headers, payload=payload, stream=stream)
        request.body  # noqa: B018 - encode now: a bad payload fails at build time
        return request

    def get(self, path: str) -> Request:
        """A GET :class:`~llmpool.models.Request` to *path* (no body, no Content-Type)."""
        headers = self.headers()
        headers.pop("Content-Type", None)
        return Request(method="GET", path=path, headers=headers)

    @abc.abstractmethod
    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Request:
        """The request for a chat completion; *messages* are OpenAI-style."""

    @abc.abstractmethod
    def parse_chat(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        """A chat completion from a 2xx *body*; InvalidResponse when it is not one."""

    @abc.abstractmethod
    def stream_parser(self, *, request_id: str | None = None) -> StreamParser:
        """A new parser for one streamed response's events."""

    def build_complete(
        self,
        model: str,
        prompt: str,
        *,
        stream: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Request:
        """The request for a legacy text completion (unsupported by default)."""
        self.unsupported("text completions")

    def parse_complete(self, body: bytes, *, request_id: str | None) -> ChatCompletion:
        """A text completion as a ChatCompletion (unsupported by default)."""
        self.unsupported("text completions")

    def build_embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Request:
        """The request for embeddings (unsupported by default)."""
        self.unsupported("embeddings")

    def parse_embed(self, body: bytes, *, request_id: str | None) -> Embeddings:
        """Embeddings from a 2xx *body* (unsupported by default)."""
        self.unsupported("embeddings")

    def parse_embed_checked(
        self, body: bytes, *, request_id: str | None, inputs: int
    ) -> Embeddings:
        """:meth:`parse_embed`, then InvalidResponse unless there is exactly one
        vector per input (*inputs* is the number of input strings). The client
        parses embeddings with this, so every provider gets the check."""
        result = self.parse_embed(body, request_id=request_id)
        if len(result.vectors) != inputs:
            problem = f"has {len(result.vectors)} vectors for {inputs} input(s)"
            raise InvalidResponse(
                f"embeddings {problem}",
                status_code=None,
                request_id=request_id,
                body=excerpt(body),
            )
        return result

    def build_models(self) -> Request:
        """The request listing the models (``GET /models``)."""
        return self.get("/models")

    def parse_models(self, body: bytes, *, request_id: str | None = None) -> tuple[str, ...]:
        """Model ids from a ``{"data": [{"id": ...}, ...]}`` body."""
        data = load_json(body, request_id=request_id, what="model list")
        with response_shape(body, request_id, "model list"):
            return tuple(str(as_dict(item)["id"]) for item in as_list(as_dict(data)["data"]))

    def unsupported(self, what: str) -> NoReturn:
        """Raise the ConfigError for an operation this provider does not offer."""
        raise ConfigError(
            f"the {self.name} provider does not support {what}", key="provider", value=self.name
        )

    # ------------------------------------------------------------------ errors

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIStatusError:
        """The typed error for a non-2xx answer, with the provider's message,
        error type, the request id and ``retry_after`` from the headers."""
        message, error_type, body_request_id = self.error_details(body)
        if not message:
            message = excerpt(body, 200).strip() or f"HTTP {status}"
        return error_for_status(
            status,
            message,
            request_id=self.request_id(headers) or body_request_id,
            body=body,
            retry_after=parse_retry_after(headers),
            error_type=error_type,
        )

    def error_details(self, body: bytes) -> tuple[str | None, str | None, str | None]:
        """``(message, error_type, request_id)`` read from an error body.

        Understands OpenAI's ``{"error": {"message", "type", "code"}}``,
        Anthropic's ``{"type": "error", "error": {"type", "message"},
        "request_id"}`` and the common ``{"error": "..."}``, ``{"message":
        ...}`` and ``{"detail": ...}`` shapes; anything else gives Nones. The
        request id is cut to :data:`~llmpool.exceptions.MAX_REQUEST_ID_CHARS`.
        """
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return None, None, None
        if not isinstance(data, dict):
            return None, None, None
        error = data.get("error")
        request_id = cap_request_id(opt_text(data.get("request_id")))
        if isinstance(error, dict):
            kind = opt_text(error.get("type")) or opt_text(error.get("code"))
            return opt_text(error.get("message")), kind, request_id
        if isinstance(error, str):
            return excerpt(error), None, request_id
        for key in ("message", "detail"):
            if isinstance(data.get(key), str):
                return excerpt(data[key]), None, request_id
        return None, None, request_id


def check_api_key(api_key: object) -> str | None:
    """*api_key* when it is None or a string that can travel in a header;
    ConfigError (key ``api_key``) otherwise.

    A key read from a file or an environment variable often keeps its
    trailing newline; sent as is it would fail deep in the HTTP library with
    the key in the message. The error here never shows the value.
    """
    if api_key is None:
        return None
    if not isinstance(api_key, str):
        raise ConfigError(
            f"api_key must be a string or None, got a {type(api_key).__name__}", key="api_key"
        )
    try:
        check_header("api-key", api_key, key="api_key")
    except ConfigError:
        raise ConfigError(
            "api_key cannot be sent in a header: it holds a control character (CR, LF, NUL; "
            "often a trailing newline read from a file or environment variable) or a "
            "character outside Latin-1",
            key="api_key",
        ) from None
    return api_key


def checked_headers(
    headers: Mapping[str, str] | None, *, key: str = "default_headers"
) -> Mapping[str, str]:
    """*headers* (``{}`` for None) when every name is an HTTP token and every
    value a string without CR, LF or NUL (:func:`llmpool.redaction.check_headers`);
    ConfigError naming *key* and the header, never the value, otherwise."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigError(
            f"{key} must map header names to string values, got {type(headers).__name__}",
            key=key,
        )
    check_headers(headers, key=key)
    return headers


class StreamParser(abc.ABC):
    """Turns one stream's server-sent events into :class:`~llmpool.models.ChatChunk`.

    Thread safety: none needed; one parser per stream, confined to the thread
    reading it. It remembers what the caller needs at the end: whether the
    terminal marker arrived (:attr:`done`), the finish reason, the usage and
    the text so far (for the context of a StreamInterrupted).
    """

    #: Error types that a retry may cure (when nothing was delivered yet).
    transient_errors: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        #: The response id the stream announced (None until it did).
        self.response_id: str | None = None
        #: The model the stream announced (None until it did).
        self.model: str | None = None
        self._done = False
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    @abc.abstractmethod
    def feed(self, event: SSEEvent) -> ChatChunk | None:
        """The chunk *event* carries, or None for events without one (pings,
        bookkeeping, the terminal marker). Raises StreamError for an error
        event and InvalidResponse for malformed data."""

    @property
    def done(self) -> bool:
        """Whether the terminal marker (``[DONE]``, ``message_stop``) was seen."""
        return self._done

    @property
    def finish_reason(self) -> str | None:
        """The last finish reason seen (OpenAI's vocabulary), or None."""
        return self._finish_reason

    @property
    def usage(self) -> Usage | None:
        """The token usage, once the stream reported it."""
        return self._usage

    def load(self, data: str) -> dict[str, Any]:
        """The JSON object of an event's data; InvalidResponse otherwise."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise invalid_response(
                data, self.request_id, "stream event", exc, problem=_NOT_JSON
            ) from exc
        if not isinstance(obj, dict):
            raise self.invalid(data, TypeError(f"expected an object, got {type(obj).__name__}"))
        return obj

    def invalid(self, data: str, exc: BaseException) -> InvalidResponse:
        """The InvalidResponse for event *data* that *exc* found malformed.

        Stream parsers catch :data:`SHAPE_ERRORS` around their reading code
        and raise this (a plain ``try`` costs nothing on the hot path, where
        a context manager per event would)."""
        return invalid_response(data, self.request_id, "stream event", exc)

    def chunk(self, delta: str = "", **fields: Any) -> ChatChunk:
        """A chunk, recording its finish reason (first choice) and usage on the
        parser. The text is the Stream's to keep (bounded), never the parser's."""
        first = fields.get("index", 0) == 0
        if first and fields.get("finish_reason"):
            self._finish_reason = fields["finish_reason"]
        if fields.get("usage") is not None:
            self._usage = fields["usage"]
        return ChatChunk(delta=delta, **fields)

    def error(self, message: str, error_type: str | None, data: str) -> StreamError:
        """The StreamError for an error event; retryable when the type is transient."""
        return StreamError(
            message or "error event in the stream",
            status_code=200,
            request_id=self.request_id,
            body=excerpt(data),
            error_type=error_type,
            text="",  # the Stream fills in what it delivered
            delivered=False,
            retryable=error_type in self.transient_errors,
        )

    def error_event(self, data: str, obj: Any = None) -> StreamError:
        """The StreamError for an error event whose data is *data* (*obj* when
        already decoded): ``{"error": {"type", "message"}}`` (both providers),
        ``{"error": "..."}``, or plain text."""
        if obj is None:
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):
                return self.error(excerpt(data, 200), None, data)
        error = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(error, dict):
            kind = opt_text(error.get("type")) or opt_text(error.get("code"))
            return self.error(opt_text(error.get("message")) or "", kind, data)
        message = opt_text(error) or (
            opt_text(obj.get("message")) if isinstance(obj, dict) else None
        )
        return self.error(message or excerpt(data, 200), None, data)


# --------------------------------------------------------------------------- helpers


def merge_headers(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """*base* updated with *extra*, header names compared without case
    (the spelling of *extra* wins)."""
    merged = dict(base)
    for name, value in extra.items():
        for old in [k for k in merged if k.lower() == name.lower()]:
            del merged[old]
        merged[name] = value
    return merged


def load_json(body: bytes | str, *, request_id: str | None, what: str = "response") -> Any:
    """Decode JSON *body*; InvalidResponse (with an excerpt) when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise invalid_response(body, request_id, what, exc, problem=_NOT_JSON) from exc


_NOT_JSON = "is not valid JSON"

#: What reading a decoded body of the wrong shape raises; mapped to InvalidResponse.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def invalid_response(
    body: bytes | str,
    request_id: str | None,
    what: str,
    exc: BaseException,
    *,
    problem: str = "has an unexpected shape",
) -> InvalidResponse:
    """The InvalidResponse for a *body* that *exc* found malformed (with an excerpt)."""
    return InvalidResponse(
        f"{what} {problem} ({type(exc).__name__}: {exc})",
        status_code=None,
        request_id=request_id,
        body=excerpt(body),
    )


@contextlib.contextmanager
def response_shape(body: bytes | str, request_id: str | None, what: str) -> Iterator[None]:
    """Turn a KeyError/TypeError/ValueError/... raised while reading a decoded
    body into InvalidResponse, so a wrong shape never escapes raw."""
    try:
        yield
    except LLMPoolError:
        raise
    except SHAPE_ERRORS as exc:
        raise invalid_response(body, request_id, what, exc) from exc


def as_dict(value: Any) -> dict[str, Any]:
    """*value* when it is a JSON object; TypeError otherwise."""
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def as_list(value: Any) -> list[Any]:
    """*value* when it is a JSON array; TypeError otherwise."""
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def opt_str(value: Any) -> str | None:
    """*value* when it is a string or None; TypeError otherwise."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def opt_text(value: Any) -> str | None:
    """*value* when it is a non-empty string, else None (never raises)."""
    return value if isinstance(value, str) and value else None


def opt_int(value: Any, default: int | None = None) -> int | None:
    """*value* when it is an integer, *default* when None; TypeError otherwise."""
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def parse_tool_calls(value: Any) -> tuple[ToolCall, ...]:
    """OpenAI-style ``tool_calls`` (a list or None) as ToolCall values."""
    if value is None:
        return ()
    calls = []
    for item in as_list(value):
        call = as_dict(item)
        function = as_dict(call["function"])
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {})
        calls.append(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(function["name"]),
                arguments=arguments,
                type=str(call.get("type") or "function"),
            )
        )
    return tuple(calls)


def message_dict(message: MessageLike) -> dict[str, Any]:
    """An OpenAI-style dict for *message* (a dict is copied, a Message converted)."""
    if isinstance(message, Message):
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type,
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        return out
    if isinstance(message, Mapping) and isinstance(message.get("role"), str):
        return dict(message)
    raise ConfigError(
        f"each message must be a mapping with a 'role' or a Message, got {message!r:.80}",
        key="messages",
    )


def normalise_messages(messages: Sequence[MessageLike]) -> list[dict[str, Any]]:
    """Check *messages* and return them as a list of OpenAI-style dicts."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ConfigError(
            f"messages must be a list of messages, got {type(messages).__name__}",
            key="messages",
        )
    if not messages:
        raise ConfigError("messages must not be empty", key="messages")
    return [message_dict(m) for m in messages]


def check_model(model: str) -> str:
    """*model* when it is a non-empty string; ConfigError otherwise."""
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model must be a non-empty string, got {model!r}", key="model")
    return model


def stop_list(stop: str | Sequence[str] | None) -> list[str] | None:
    """*stop* as a list of strings (None stays None)."""
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if not all(isinstance(s, str) for s in stop):
        raise ConfigError("stop must be a string or a list of strings", key="stop")
    return list(stop)


def with_extra(payload: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """*payload* updated with the caller's *extra_body* (which wins).

    *extra_body* must be a mapping that strict JSON can hold: a datetime, a
    set, bytes, NaN or infinity in it raises ConfigError (key
    ``extra_body``) naming the type, never the content."""
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise ConfigError("extra_body must be a mapping", key="extra_body")
        encode_json(extra_body, key="extra_body")
        payload.update(extra_body)
    return payload


def parse_usage(value: Any) -> Usage:
    """OpenAI-style usage (``prompt_tokens``, ``completion_tokens``, ``total_tokens``)."""
    if value is None:
        return Usage()
    usage = as_dict(value)
    prompt = opt_int(usage.get("prompt_tokens"), 0) or 0
    completion = opt_int(usage.get("completion_tokens"), 0) or 0
    total = opt_int(usage.get("total_tokens"), prompt + completion) or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
