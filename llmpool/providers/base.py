"""The provider contract: build requests, parse bodies, never touch the network.

A provider turns a call's arguments into a :class:`~llmpool.models.Request`
and a server's bytes into result values. The client does the HTTP. One
provider instance serves every thread of a process: it is configured once
(headers precomputed) and keeps no per-call state. Per-stream state lives in
a :class:`StreamParser`, one per stream.

The helpers (:func:`load_json`, :func:`response_shape`,
:func:`normalise_messages`, ...) are public so that third-party providers
report malformed bodies the same way the built-in ones do. They live in
:mod:`llmpool.providers.parsing` (reading bodies) and
:mod:`llmpool.providers.payload` (building requests), :class:`StreamParser`
in :mod:`llmpool.providers.stream_parser`; this module re-exports them all.
"""

from __future__ import annotations

import abc
import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from llmpool._version import __version__
from llmpool.exceptions import (
    APIStatusError,
    ConfigError,
    InvalidResponse,
    cap_request_id,
    error_for_status,
    excerpt,
)
from llmpool.models import (
    ChatCompletion,
    Embeddings,
    Request,
)
from llmpool.params import NO_PARAMS, CallParams
from llmpool.providers.parsing import (
    SHAPE_ERRORS,
    as_dict,
    as_list,
    invalid_response,
    load_json,
    opt_int,
    opt_str,
    opt_text,
    parse_tool_calls,
    parse_usage,
    response_shape,
)
from llmpool.providers.payload import (
    MessageLike,
    check_model,
    merge_headers,
    message_dict,
    normalise_messages,
    stop_list,
    with_extra,
)
from llmpool.providers.stream_parser import StreamParser
from llmpool.redaction import check_header, check_headers
from llmpool.retry import get_header, parse_retry_after

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
    #: The environment variable that names the base URL when none is given
    #: (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``).
    base_url_env: ClassVar[str | None] = None
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

    def api_path(self, path: str) -> str:
        """The path of the API root for a base URL whose path is *path* (no
        trailing slash). The default keeps it: the base URL names the root,
        version included."""
        return path

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

    def request_headers(self, method: str, *, stream: bool = False) -> dict[str, str]:
        """A fresh copy of the headers a *method* request gets from :meth:`post`
        or :meth:`get` (a GET has no body, so no ``Content-Type``)."""
        headers = self.headers(stream=stream)
        if method == "GET":
            headers.pop("Content-Type", None)
        return headers

    def post(self, path: str, payload: Mapping[str, Any], *, stream: bool = False) -> Request:
        """A POST :class:`~llmpool.models.Request` of *payload* to *path*.

        The body is encoded here, once, so a payload that strict JSON cannot
        hold (a datetime, a set, bytes, NaN) raises ConfigError when the
        request is built, naming the field, and nothing is sent."""
        headers = self.headers(stream=stream)  # request_headers("POST"), one call less
        request = Request.owning("POST", path, headers, payload, stream)  # headers: a fresh copy
        request.body  # noqa: B018 - encode now: a bad payload fails at build time
        return request

    def get(self, path: str) -> Request:
        """A GET :class:`~llmpool.models.Request` to *path* (no body, no Content-Type)."""
        return Request(method="GET", path=path, headers=self.request_headers("GET"))

    @abc.abstractmethod
    def build_chat(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        params: CallParams = NO_PARAMS,
    ) -> Request:
        """The request for a chat completion; *messages* are OpenAI-style and
        *params* (:class:`~llmpool.params.CallParams`) the generation
        parameters, each mapped to this API or refused with ConfigError."""

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
        params: CallParams = NO_PARAMS,
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
    check_headers(headers, key=key)
    return headers
