"""The raw response llmpool hands out: bounded, decoded reads whose errors
map to llmpool's tree.

Confined to the thread that made it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from llmpool import exceptions as errors
from llmpool.pool.transport import map_error
from llmpool.redaction import redact_url

__all__ = ["Response"]

log = logging.getLogger(__name__)

#: The largest piece of a body read (and decoded) at a time.
_CHUNK = 65536


class Response:
    """A raw HTTP response from the pool.

    Confined to the thread that made it. Its connection goes back to the pool
    when the body has been read to the end, or on :meth:`close` (which closes
    the connection when the body was not read to the end, so a half-read
    socket is never reused). Use it as a context manager.

    Bodies are decoded (gzip, deflate...) as they are read, at most 64 KiB
    at a time: size limits apply to the decoded bytes. Every read is bounded
    by the exchange's deadline, when it has one. :attr:`url` is the request's
    URL with any password and credential-like query parameter masked.
    """

    __slots__ = (
        "_content",
        "_raw",
        "_released",
        "_url",
        "connection_reused",
        "headers",
        "pool_wait",
        "status",
    )

    def __init__(self, raw: Any, url: str, reused: bool) -> None:
        self._raw = raw
        self._released = False
        self._content: bytes | None = None
        self.status: int = raw.status
        self.headers: Mapping[str, str] = raw.headers
        self._url = url
        self.connection_reused = reused
        #: Seconds the request waited for a free connection (None: unknown).
        self.pool_wait: float | None = getattr(raw, "llm_pool_wait", None)

    @property
    def url(self) -> str:
        """The request's URL, fit to show (password and secret parameters masked)."""
        return redact_url(self._url)

    def header(self, name: str) -> str | None:
        """A header's value (case-insensitive), or None."""
        return self.headers.get(name)

    def read(self, max_bytes: int | None = None) -> bytes:
        """Read the whole body and give the connection back.

        Raises :class:`~llmpool.exceptions.ResponseTooLarge` (and closes the
        connection) when the decoded body exceeds *max_bytes*; a compressed
        body is decoded 64 KiB at a time, so it is refused before it is
        inflated. A second call returns the same bytes.
        """
        if self._content is not None:
            return self._content
        raw = self._raw
        length = raw.length_remaining
        if (
            length is not None
            and (max_bytes is None or length <= max_bytes)
            and _identity(self.headers)
        ):
            return self._read_known()
        parts: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = raw.read(_CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    parts.clear()
                    self._discard()
                    raise errors.ResponseTooLarge(
                        f"response body exceeded max_response_bytes={max_bytes}",
                        status_code=self.status,
                        request_id=None,
                        body="",
                        limit=max_bytes,
                    )
                parts.append(chunk)
            self._finish()
        except errors.LLMPoolError:
            raise
        except Exception as exc:
            self.close()
            raise map_error(exc, self._url) from exc
        self._content = b"".join(parts)
        return self._content

    def _read_known(self) -> bytes:
        """Read an identity body whose Content-Length fits the limit, in one call."""
        try:
            data: bytes = self._raw.read()
            self._finish()
        except Exception as exc:
            self.close()
            raise map_error(exc, self._url) from exc
        self._content = data
        return data

    @property
    def content(self) -> bytes:
        """The body (read on first access)."""
        return self.read()

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the decoded body as it arrives: each piece as soon as it is
        received, never more than 64 KiB at a time."""
        raw = self._raw
        try:
            if raw.chunked and raw.supports_chunked_reads():
                chunks = raw.read_chunked(_CHUNK, decode_content=True)
            else:
                chunks = iter(functools.partial(raw.read1, _CHUNK, decode_content=True), b"")
            yield from chunks
            self._finish()
        except Exception as exc:
            self.close()
            raise map_error(exc, self._url) from exc

    def drain(self, limit: int = 1 << 20) -> bool:
        """Read what is left (at most *limit* decoded bytes) so the connection
        can be reused; return whether it was. Never raises."""
        raw = self._raw
        try:
            left = limit
            while left > 0:
                chunk = raw.read(min(_CHUNK, left), decode_content=True)
                if not chunk:
                    self._finish()
                    return True
                left -= len(chunk)
        except Exception:  # a broken connection cannot be reused anyway
            log.debug("drain failed; closing the connection", exc_info=True)
        self.close()
        return False

    def _finish(self) -> None:
        if not self._released:
            self._released = True
            self._raw.release_conn()

    def _discard(self) -> None:
        """Give the connection back closed (unless urllib3 already gave it back
        clean, the whole body having been received)."""
        if self._released:
            return
        self._released = True
        raw = self._raw
        try:
            raw.close()
        finally:
            raw.release_conn()

    def close(self) -> None:
        """Give the connection back; close it first unless the body was read to the end."""
        if self._released:
            return
        self._released = True
        raw = self._raw
        try:
            if not raw.isclosed():
                raw.close()
        finally:
            raw.release_conn()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Response [{self.status}] {self.url}>"


def _identity(headers: Mapping[str, str]) -> bool:
    """Whether the body is sent as is (no Content-Encoding to decode)."""
    encoding = headers.get("content-encoding")
    return not encoding or encoding.strip().lower() == "identity"
