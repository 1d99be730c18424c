"""The client's Stream: chunks of a streamed completion, as they arrive.

The bytes are decoded into server-sent events by :class:`SSEDecoder` (in
:mod:`llmpool.sse`, re-exported here) and into chunks by the provider's
stream parser.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, Protocol

from llmpool.exceptions import (
    IncompleteStream,
    LLMPoolError,
    ReadTimeout,
    StreamInterrupted,
    TransportError,
)
from llmpool.models import CallContext, ChatChunk, Usage
from llmpool.options import DEFAULT_MAX_STREAM_TEXT
from llmpool.sse import DEFAULT_MAX_LINE_BYTES, SSEDecoder, SSEEvent

__all__ = ["DEFAULT_MAX_LINE_BYTES", "SSEDecoder", "SSEEvent", "Stream"]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- Stream


class _StreamParser(Protocol):
    done: bool
    finish_reason: str | None
    usage: Usage | None

    def feed(self, event: SSEEvent) -> ChatChunk | None: ...


class _StreamProvider(Protocol):
    def stream_parser(self, *, request_id: str | None = None) -> Any: ...

    def request_id(self, headers: Mapping[str, str]) -> str | None: ...


class _Response(Protocol):
    status: int
    headers: Mapping[str, str]

    def iter_bytes(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


#: Characters of a stream's text kept beyond ``max_stream_text``: its tail.
_TAIL_CHARS = 64 * 1024

#: How much of a body left after the final marker a stream reads to keep the connection.
_DRAIN_LIMIT = 64 * 1024


class Stream:
    """A streamed completion: iterate it for :class:`~llmpool.ChatChunk` values.

    Confined to the thread that made it. Use it as a context manager: its
    connection goes back to the pool when the stream is exhausted, closed,
    left early (``break`` or an exception in the ``with`` block) or fails.
    A stream left without ``with`` or ``close()`` gives its connection back
    (and ``on_stream_end`` fires) as soon as the last reference to it is
    dropped: nothing waits for the garbage collector.
    After the final marker (``[DONE]`` or ``message_stop``) the rest of the
    body is drained so the connection is reused, not dropped.

    A stream is built on a response the client's retry loop already opened:
    the constructor does no I/O. A stream that fails before any chunk reached
    the caller is retried under the client's policy and deadline (*reopen*
    waits, then opens the next attempt's response, or raises); once a chunk
    was delivered it never is.
    A stream that ends without its final marker raises
    :class:`~llmpool.exceptions.IncompleteStream`; a dropped connection raises
    :class:`~llmpool.exceptions.StreamInterrupted` (a stall past the read
    timeout raises :class:`~llmpool.exceptions.ReadTimeout`, and one past the
    call's deadline :class:`~llmpool.exceptions.DeadlineExceeded`); each
    carries ``text``, what arrived before it, and the ``request_id``.

    Memory stays bounded however long the answer: ``text`` keeps the whole
    answer up to the client's ``max_stream_text`` characters (1 Mi by
    default), then only its last 64 Ki characters (at most half the limit;
    ``text_truncated`` says so). Every chunk still reaches the caller whole.
    """

    __slots__ = ("__weakref__", "_chunks", "_core")

    def __init__(
        self,
        *,
        ctx: CallContext,
        request: Any,
        provider: _StreamProvider,
        response: _Response,
        reopen: Callable[[LLMPoolError], _Response],
        plugins: Any = None,
        on_done: Callable[[CallContext, Any, int, LLMPoolError | None], None] | None = None,
        max_text: int | None = DEFAULT_MAX_STREAM_TEXT,
        check_deadline: Callable[[LLMPoolError], None] | None = None,
    ) -> None:
        # The state lives in a core that never refers back to this object, and
        # the generator refers only to the core: no reference cycle, so
        # dropping the last reference to a stream runs __del__ at once.
        self._core = _StreamCore(
            owner=self,
            ctx=ctx,
            request=request,
            provider=provider,
            response=response,
            reopen=reopen,
            plugins=plugins,
            on_done=on_done,
            max_text=max_text,
            check_deadline=check_deadline,
        )
        self._chunks = self._core.generate()

    @property
    def request_id(self) -> str | None:
        """The server's request id (of the attempt being read)."""
        return self._core.request_id

    @property
    def text(self) -> str:
        """The text received so far; only its last characters when it outgrew
        the client's ``max_stream_text`` (then ``text_truncated`` is True)."""
        return self._core.text

    @property
    def text_truncated(self) -> bool:
        """Whether ``text`` lost its beginning (the answer outgrew ``max_stream_text``)."""
        return self._core.text_truncated

    @property
    def finish_reason(self) -> str | None:
        """The finish reason, once the server sent it."""
        parser = self._core.parser
        return parser.finish_reason if parser is not None else None

    @property
    def usage(self) -> Usage | None:
        """Token usage, when the server reported it (at the end)."""
        parser = self._core.parser
        return parser.usage if parser is not None else None

    @property
    def closed(self) -> bool:
        """Whether the stream has ended and its connection went back."""
        return self._core.ended

    def __iter__(self) -> Iterator[ChatChunk]:
        return self._chunks

    def __next__(self) -> ChatChunk:
        return next(self._chunks)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the stream now and give its connection back. Idempotent."""
        self._chunks.close()
        self._core.end(None, self)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.ended:
            try:
                self.close()
            except Exception:  # a finalizer must not raise; the connection is closed anyway
                log.debug("closing an abandoned stream failed", exc_info=True)

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.ended else "open"
        return f"<Stream {state} request_id={core.request_id!r} kept_chars={core.kept}>"


class _StreamCore:
    """The state and the reading of one :class:`Stream`; refers to its stream
    only weakly. Confined to the stream's thread."""

    def __init__(
        self,
        *,
        owner: Stream,
        ctx: CallContext,
        request: Any,
        provider: _StreamProvider,
        response: _Response,
        reopen: Callable[[LLMPoolError], _Response],
        plugins: Any,
        on_done: Callable[[CallContext, Any, int, LLMPoolError | None], None] | None,
        max_text: int | None,
        check_deadline: Callable[[LLMPoolError], None] | None,
    ) -> None:
        self._owner = weakref.ref(owner)
        self._ctx = ctx
        self._request = request
        self._provider = provider
        self._reopen = reopen
        self._check_deadline = check_deadline
        self._plugins = plugins
        self._on_done = on_done
        self.parts: list[str] = []
        self.kept = 0  # characters in parts
        self._max_text = max_text
        # Characters kept before _trim needs to look at the limit at all.
        self._bound = max_text if max_text is not None else float("inf")
        self.text_truncated = False
        self._delivered = False
        self._received = 0
        self.ended = False
        self.parser: _StreamParser | None = None
        self._response: _Response | None = response
        self.request_id = provider.request_id(response.headers)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _trim(self) -> None:
        """``text`` outgrew ``_bound`` characters (the hot loop of
        :meth:`_read_attempt` keeps each delta in ``parts``): past the limit only
        a tail stays, so a huge answer read chunk by chunk is never held whole."""
        limit = self._max_text
        if limit is None:
            return
        keep = min(_TAIL_CHARS, max(1, limit // 2))
        self._bound = keep * 2
        if self.kept > (keep * 2 if self.text_truncated else limit):
            tail = "".join(self.parts)[-keep:]
            self.parts = [tail]
            self.kept = len(tail)
            self.text_truncated = True

    # -- the work ----------------------------------------------------------------------

    def generate(self) -> Generator[ChatChunk, None, None]:
        try:
            while True:
                try:
                    # One attempt, read in this frame: no generator between
                    # the caller and the body's iterator.
                    hooked = False  # a plugin's error is no broken connection
                    parser, decoder, feed_data, each, on_chunk, body = self._start()
                    decode = decoder.feed if feed_data is None else decoder.feed_data
                    feed_event = parser.feed
                    # The hot loop (once per event): locals, no helper calls
                    # on the common path.
                    for data in body:
                        self._received += len(data)
                        got = decode(data)
                        for item in (got,) if got.__class__ is str else got:
                            chunk = (
                                feed_data(item) if item.__class__ is str else feed_event(item)  # type: ignore[arg-type]
                            )
                            if chunk is not None and (
                                chunk.delta
                                or chunk.finish_reason
                                or chunk.usage
                                or chunk.tool_calls
                            ):  # worth handing over (a role-only preamble is not,
                                # so a stream that fails right after it is still
                                # retried as undelivered)
                                delta = chunk.delta
                                if delta:
                                    self.parts.append(delta)
                                    self.kept += len(delta)
                                    if self.kept > self._bound:
                                        self._trim()
                                if on_chunk is not None:
                                    hooked = True
                                    on_chunk(self._ctx, chunk)
                                    hooked = False
                                self._delivered = True
                                yield chunk
                            if (chunk is None or each) and parser.done:
                                break
                        else:
                            continue
                        break
                    self._finish(parser, decoder, body)
                    break
                except LLMPoolError as err:
                    # Raises, or opens the next attempt's response.
                    self._failed(self._interrupted(err, hooked))
        except LLMPoolError as err:
            self.end(err, None)
            raise
        finally:
            self._release()
        self.end(None, None)

    def _start(
        self,
    ) -> tuple[_StreamParser, SSEDecoder, Any, bool, Any, Iterator[bytes]]:
        """An attempt's parser, decoder, the parser's ``feed_data`` (None when
        it has none), whether to ask the parser if it is done after every event,
        the ``on_stream_chunk`` hook (None without one) and the body's pieces.

        A parser with ``feed_data`` takes an event's data alone (and returns
        None for the final marker): it gets the common piece's data without an
        event built for it. The others get every event, and whether they are
        done is asked after each."""
        response = self._response
        assert response is not None
        parser: _StreamParser = self._provider.stream_parser(request_id=self.request_id)
        self.parser = parser
        feed_data = getattr(parser, "feed_data", None)
        plugins = self._plugins
        on_chunk = (
            plugins.on_stream_chunk
            if plugins is not None and plugins.has("on_stream_chunk")
            else None
        )
        return parser, SSEDecoder(), feed_data, feed_data is None, on_chunk, response.iter_bytes()

    def _interrupted(self, exc: LLMPoolError, hooked: bool) -> LLMPoolError:
        """The error an attempt failed with, for *exc*: a broken connection
        (a TransportError but a read timeout, unless a plugin's hook raised it:
        *hooked*) becomes StreamInterrupted, caused by *exc*."""
        if hooked or not isinstance(exc, TransportError) or isinstance(exc, ReadTimeout):
            return exc
        err = StreamInterrupted(
            f"the connection dropped mid-stream: {exc}",
            request_id=self.request_id,
            text=self.text,
            delivered=self._delivered,
        )
        err.__cause__ = exc  # what "raise ... from exc" would set
        err.__suppress_context__ = True
        return err

    def _finish(self, parser: _StreamParser, decoder: SSEDecoder, body: Iterator[bytes]) -> None:
        """The body ended or the final marker came: IncompleteStream without
        the marker, else the rest of the body drained."""
        if not parser.done:
            decoder.flush()
            raise IncompleteStream(
                "the stream ended without its final marker: the answer is truncated",
                request_id=self.request_id,
                text=self.text,
                delivered=self._delivered,
            )
        self._drain(body)

    def _failed(self, err: LLMPoolError) -> None:
        """An attempt failed with *err*: raise it (with what was delivered and
        the request id) once a chunk was delivered, else reopen (which waits,
        or raises when the policy or the deadline says no more)."""
        self._release()
        err.delivered = self._delivered  # type: ignore[attr-defined]
        err.text = self.text  # type: ignore[attr-defined]
        if getattr(err, "request_id", None) is None:
            err.request_id = self.request_id  # type: ignore[attr-defined]
        if self._delivered:
            if self._check_deadline is not None:
                self._check_deadline(err)  # DeadlineExceeded once it is spent
            raise err
        self._response = self._reopen(err)
        self.request_id = self._provider.request_id(self._response.headers)

    def _drain(self, body: Iterator[bytes]) -> None:
        """Read the rest of the body (the chunked terminator) through the same
        iterator, so the connection goes back to the pool reusable."""
        left = _DRAIN_LIMIT
        try:
            for data in body:
                left -= len(data)
                if left < 0:
                    return  # too much left: _release() closes the connection instead
        except LLMPoolError:
            return
        self._response = None  # read to the end: the connection is back in the pool

    def _release(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()

    def end(self, error: LLMPoolError | None, stream: Stream | None) -> None:
        """The stream ended (*stream*: the Stream, when the caller closed it)."""
        if self.ended:
            return
        self.ended = True
        self._release()
        if self._plugins is not None and self._plugins.has("on_stream_end"):
            self._plugins.on_stream_end(self._ctx, stream or self._owner())
        if self._on_done is not None:
            self._on_done(self._ctx, self._request, self._received, error)
