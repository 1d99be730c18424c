"""The transport's error boundary, without sockets: map_error and stale detection."""

from __future__ import annotations

import http.client
import ssl

import pytest
from urllib3 import exceptions as u3

from llmpool import exceptions as errors
from llmpool.pool.transport import _is_stale, describe_error, map_error

SECRET = "sk-live-0123456789abcdef"
URL = "http://127.0.0.1:9/v1/chat/completions"


def _lower_errors() -> list[tuple[BaseException, type[errors.LLMPoolError]]]:
    """Each lower error class the transport can meet, with the llmpool class it maps to."""
    return [
        (u3.EmptyPoolError(None, "no free connection"), errors.PoolTimeout),  # type: ignore[arg-type]
        (u3.ClosedPoolError(None, "Pool is closed."), errors.PoolClosed),  # type: ignore[arg-type]
        (u3.SSLError("certificate verify failed"), errors.TLSError),
        (ssl.SSLError(1, "bad handshake"), errors.TLSError),
        (ssl.CertificateError("hostname mismatch"), errors.TLSError),
        (u3.NewConnectionError(None, "Connection refused"), errors.ConnectError),  # type: ignore[arg-type]
        (u3.ProxyError("proxy down", OSError("refused")), errors.ConnectError),
        (u3.ConnectTimeoutError("connect timed out"), errors.ConnectTimeout),
        (u3.ReadTimeoutError(None, URL, "read timed out"), errors.ReadTimeout),  # type: ignore[arg-type]
        (TimeoutError("timed out"), errors.ReadTimeout),
        (u3.ProtocolError("Connection aborted.", TimeoutError("timed out")), errors.ReadTimeout),
        (
            u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
            errors.ProtocolError,
        ),
        (u3.ProtocolError("Connection aborted."), errors.ProtocolError),
        (u3.DecodeError("bad gzip"), errors.ProtocolError),
        (http.client.RemoteDisconnected("closed"), errors.ProtocolError),
        (http.client.IncompleteRead(b"ab", 10), errors.ProtocolError),
        (http.client.LineTooLong("header line"), errors.ProtocolError),
        (ConnectionResetError(104, "Connection reset by peer"), errors.ProtocolError),
        (BrokenPipeError(32, "Broken pipe"), errors.ProtocolError),
        (OSError(99, "Cannot assign requested address"), errors.ProtocolError),
        (AttributeError("'NoneType' object has no attribute 'sock'"), errors.TransportError),
    ]


@pytest.mark.parametrize(
    ("lower", "expected"),
    _lower_errors(),
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_each_lower_error_maps_to_its_llmpool_class(
    lower: BaseException, expected: type[errors.LLMPoolError]
) -> None:
    """Every urllib3 / http.client / socket error class becomes exactly its llmpool class."""
    mapped = map_error(lower, URL)
    assert type(mapped) is expected
    assert isinstance(mapped, errors.TransportError)
    assert mapped.url == URL
    assert URL in str(mapped)


def test_llmpool_error_passes_through_unchanged() -> None:
    """An error that is already llmpool's is returned as is, not wrapped."""
    original = errors.ReadTimeout("the call's deadline passed", url=URL)
    assert map_error(original, "http://other/") is original


def test_no_url_means_no_url_in_the_message() -> None:
    """Without a URL the message is the lower error's description alone."""
    mapped = map_error(ConnectionResetError(104, "Connection reset by peer"))
    assert mapped.url == ""
    assert str(mapped) == describe_error(ConnectionResetError(104, "Connection reset by peer"))


@pytest.mark.parametrize(
    "lower",
    [
        ValueError(f"Invalid header value b'Bearer {SECRET}'"),
        TypeError(f"expected str, got bytes: {SECRET}"),
        UnicodeEncodeError("latin-1", f"Bearer {SECRET}\u2028", 30, 31, "not encodable"),
        http.client.InvalidURL(f"URL can't contain control characters: '{SECRET}\\n'"),
        u3.ProtocolError("Connection aborted.", ValueError(f"Invalid header b'{SECRET}'")),
    ],
    ids=["ValueError", "TypeError", "UnicodeEncodeError", "InvalidURL", "ProtocolError-cause"],
)
def test_message_never_carries_a_header_value(lower: BaseException) -> None:
    """Errors that may quote what the caller sent show their class name, never their text."""
    mapped = map_error(lower, URL)
    assert SECRET not in str(mapped)
    assert SECRET not in repr(mapped)
    assert "withheld" in str(mapped)


def test_url_credentials_are_masked_in_the_message_and_attribute() -> None:
    """A password and a key-like query parameter in the URL never reach the error."""
    mapped = map_error(
        ConnectionResetError(104, "reset"), "http://user:pw1234@h:1/v1?api-key=s3cret"
    )
    assert "pw1234" not in str(mapped)
    assert "s3cret" not in str(mapped)
    assert "pw1234" not in mapped.url
    assert "s3cret" not in mapped.url


def test_network_error_text_is_kept() -> None:
    """Errors that describe what the peer or socket did keep their text."""
    mapped = map_error(ConnectionRefusedError(111, "Connection refused"), URL)
    assert "Connection refused" in str(mapped)
    empty = map_error(u3.EmptyPoolError(None, "no free connection within 0.1s"), URL)  # type: ignore[arg-type]
    assert "no free connection within 0.1s" in str(empty)


@pytest.mark.parametrize(
    "cause",
    [
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        ConnectionAbortedError(103, "Software caused connection abort"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_dead_keepalive_socket_is_stale(cause: BaseException) -> None:
    """A protocol error caused by the peer closing or resetting the socket is stale."""
    assert _is_stale(u3.ProtocolError("Connection aborted.", cause))


def test_stale_cause_may_come_from_the_context() -> None:
    """Without a second argument, the implicit context names the cause."""
    exc = u3.ProtocolError("Connection aborted.")
    exc.__context__ = ConnectionResetError(104, "reset")
    assert _is_stale(exc)


@pytest.mark.parametrize(
    "exc",
    [
        u3.ReadTimeoutError(None, URL, "read timed out"),  # type: ignore[arg-type]
        u3.ProtocolError("Connection aborted.", TimeoutError("timed out")),
        u3.ProtocolError("Connection broken: IncompleteRead", http.client.IncompleteRead(b"")),
        u3.ProtocolError("Connection aborted."),
        ConnectionResetError(104, "reset"),
        u3.NewConnectionError(None, "Connection refused"),  # type: ignore[arg-type]
        u3.EmptyPoolError(None, "no free connection"),  # type: ignore[arg-type]
    ],
    ids=lambda e: type(e).__name__,
)
def test_other_failures_are_not_stale(exc: BaseException) -> None:
    """Timeouts, partial bodies, bare socket errors and pool errors are never re-sent."""
    assert not _is_stale(exc)
