"""The exception tree: picklable, context kept, classes by status."""

from __future__ import annotations

import pickle

import pytest

from llmpool import exceptions as exc


def test_every_error_derives_from_root() -> None:
    """Every public exception class is an LLMPoolError."""
    for name in exc.__all__:
        obj = getattr(exc, name)
        if isinstance(obj, type):
            assert issubclass(obj, exc.LLMPoolError), name


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, exc.BadRequestError),
        (401, exc.AuthenticationError),
        (403, exc.PermissionDeniedError),
        (404, exc.NotFoundError),
        (408, exc.RequestTimeoutError),
        (409, exc.ConflictError),
        (422, exc.UnprocessableEntityError),
        (429, exc.RateLimitError),
        (500, exc.InternalServerError),
        (502, exc.InternalServerError),
        (529, exc.OverloadedError),
        (418, exc.APIStatusError),
        (599, exc.InternalServerError),
        (600, exc.APIStatusError),
        (999, exc.APIStatusError),
        (150, exc.APIStatusError),
        (302, exc.APIStatusError),
    ],
)
def test_error_for_status_picks_class(status: int, cls: type) -> None:
    """Each status maps to its documented class and carries the context."""
    err = exc.error_for_status(status, "boom", request_id="req_1", body=b"x" * 900)
    assert type(err) is cls
    assert err.status_code == status
    assert err.request_id == "req_1"
    assert len(err.body) <= exc.BODY_EXCERPT_CHARS + 3
    assert "req_1" in str(err)


def test_retryable_flags() -> None:
    """Client errors are final; throttling and server errors may be retried."""
    assert not exc.error_for_status(400, "x").retryable
    assert not exc.error_for_status(422, "x").retryable
    assert exc.error_for_status(429, "x").retryable
    assert exc.error_for_status(503, "x").retryable
    assert not exc.error_for_status(501, "x").retryable
    assert not exc.error_for_status(599, "x").retryable
    for status in (150, 302, 600, 999):
        assert not exc.error_for_status(status, "x").retryable


def test_errors_pickle_with_context() -> None:
    """Errors survive pickling with their attributes (Celery, multiprocessing)."""
    err = exc.error_for_status(429, "slow down", request_id="r", retry_after=2.0)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is exc.RateLimitError
    assert (back.status_code, back.request_id, back.retry_after) == (429, "r", 2.0)
    cfg = exc.ConfigError("bad", key="a.b", value=3, file="f.yaml", line=4)
    back_cfg = pickle.loads(pickle.dumps(cfg))
    assert str(back_cfg) == str(cfg)
    assert back_cfg.key == "a.b" and back_cfg.line == 4


def test_config_error_names_key_file_and_line() -> None:
    """A ConfigError's message names the file, line and key path."""
    err = exc.ConfigError(
        "must be an integer", key="connection_pool.max_connections", file="x.yaml", line=3
    )
    text = str(err)
    assert "x.yaml" in text and "line 3" in text and "connection_pool.max_connections" in text


def test_every_public_error_is_shown_as_llmpool_exceptions() -> None:
    """Classes defined in private modules still name llmpool.exceptions (reprs, pickles, docs)."""
    for name in exc.__all__:
        assert getattr(exc, name).__module__ == "llmpool.exceptions", name
    assert b"llmpool._" not in pickle.dumps(exc.error_for_status(429, "slow"))
