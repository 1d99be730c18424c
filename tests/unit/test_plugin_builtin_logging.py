"""The built-in logging plugin: one line per call, never a secret."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from llmpool.exceptions import RateLimitError, error_for_status
from llmpool.models import CallContext, ChatCompletion, Choice, Message, Request, Usage
from llmpool.plugins import PluginManager
from llmpool.plugins.builtin.logging import LoggingPlugin, redact

SECRET = "sk-live-0123456789abcdef"


def manager_with(settings: dict[str, Any] | None = None) -> PluginManager:
    manager = PluginManager(strict=True)
    manager.register_plugin(LoggingPlugin, settings)
    return manager


def call() -> CallContext:
    ctx = CallContext(operation="chat", model="gpt-test", provider="openai")
    ctx.status_code, ctx.connection_reused, ctx.retries, ctx.attempt = 200, True, 1, 2
    return ctx


def secret_request(stream: bool = False) -> Request:
    return Request(
        method="POST",
        path="/chat/completions",
        headers={"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET},
        payload={
            "model": "gpt-test",
            "api_key": SECRET,
            "messages": [{"role": "user", "content": "hello " + "x" * 300}],
        },
        stream=stream,
    )


def result(text: str = "the answer") -> ChatCompletion:
    return ChatCompletion(
        id="c1",
        model="gpt-test",
        choices=(Choice(index=0, message=Message(role="assistant", content=text)),),
        usage=Usage(prompt_tokens=7, completion_tokens=5, total_tokens=12),
    )


class Stream:
    text = "streamed text"
    finish_reason = "stop"
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llmpool.calls"]


def test_one_info_line_with_the_call_facts(caplog: pytest.LogCaptureFixture) -> None:
    """A successful call logs one INFO line with id, operation, model, status, tokens, reuse."""
    manager = manager_with()
    ctx = call()
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        manager.after_response(ctx, secret_request(), result())
    (record,) = lines(caplog)
    message = record.getMessage()
    assert record.levelno == logging.INFO
    for part in (
        f"call_id={ctx.call_id}",
        "operation=chat",
        "model=gpt-test",
        "outcome=ok",
        "status=200",
        "latency_ms=",
        "tokens=12",
        "reused=True",
        "retries=1",
    ):
        assert part in message
    assert record.llmpool["tokens"] == 12  # type: ignore[attr-defined]


@pytest.mark.parametrize("log_bodies", [False, True])
def test_api_key_never_appears(caplog: pytest.LogCaptureFixture, log_bodies: bool) -> None:
    """Neither the Authorization header nor a key in the payload is ever logged."""
    manager = manager_with({"log_bodies": log_bodies})
    with caplog.at_level(logging.DEBUG):
        manager.after_response(call(), secret_request(), result())
        manager.on_error(call(), secret_request(), RuntimeError("failed"))
    assert len(lines(caplog)) == 2
    assert SECRET not in caplog.text
    assert "Bearer" not in caplog.text


def test_bodies_only_when_asked_and_truncated(caplog: pytest.LogCaptureFixture) -> None:
    """Bodies appear only with log_bodies, cut to max_body_chars, keys masked."""
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        manager_with().after_response(call(), secret_request(), result())
        manager_with({"log_bodies": True, "max_body_chars": 120}).after_response(
            call(), secret_request(), result("the answer")
        )
    without, with_bodies = (r.getMessage() for r in lines(caplog))
    assert "hello" not in without and "the answer" not in without
    assert "hello" in with_bodies and "the answer" in with_bodies
    assert "more]" in with_bodies and "x" * 100 not in with_bodies
    assert '"api_key": "***"' in with_bodies


def test_error_line_names_the_error_class(caplog: pytest.LogCaptureFixture) -> None:
    """A failed call logs outcome=error with the error's class and request id."""
    error = error_for_status(429, "slow down", request_id="req-9")
    assert isinstance(error, RateLimitError)
    ctx = call()
    ctx.status_code = 429
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        manager_with().on_error(ctx, secret_request(), error)
    message = lines(caplog)[0].getMessage()
    assert "outcome=error" in message and "error=RateLimitError" in message
    assert "request_id=req-9" in message and "status=429" in message


def test_stream_logs_once_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    """A stream is logged by on_stream_end, once, even if on_error follows."""
    manager = manager_with()
    ctx = call()
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        manager.after_response(ctx, secret_request(stream=True), None)
        manager.on_stream_end(ctx, Stream())
        manager.on_error(ctx, secret_request(stream=True), RuntimeError("late"))
    (record,) = lines(caplog)
    assert "tokens=3" in record.getMessage()


def test_cache_answer_is_logged_as_cached(caplog: pytest.LogCaptureFixture) -> None:
    """A call answered by a plugin is logged with outcome=cached."""
    ctx = call()
    ctx.state["answered_by"] = "cache"
    with caplog.at_level(logging.INFO, logger="llmpool.calls"):
        manager_with().after_response(ctx, secret_request(), result())
    assert "outcome=cached" in lines(caplog)[0].getMessage()


def test_level_and_logger_settings(caplog: pytest.LogCaptureFixture) -> None:
    """The logger name and level are settings; below the level nothing is formatted."""
    manager = manager_with({"logger": "custom.calls", "level": "debug"})
    with caplog.at_level(logging.INFO, logger="custom.calls"):
        manager.after_response(call(), secret_request(), result())
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="custom.calls"):
        manager.after_response(call(), secret_request(), result())
    assert [r.name for r in caplog.records] == ["custom.calls"]


@pytest.mark.parametrize("settings", [{"log_body": True}, {"level": "LOUD"}, {"max_body_chars": 0}])
def test_bad_settings_are_load_failures(settings: dict[str, Any]) -> None:
    """A misspelt or invalid setting stops the plugin from loading, naming the key."""
    manager = PluginManager()
    assert manager.register_plugin(LoggingPlugin, settings) is None
    (failure,) = manager.load_failures
    assert next(iter(settings)) in failure.reason


def test_redact_masks_nested_secret_keys() -> None:
    """redact() masks secret-looking keys at any depth and keeps the rest."""
    value = {"a": [{"Authorization": "x", "b": 1}], "token": "t", "max_tokens": 5}
    assert redact(value) == {
        "a": [{"Authorization": "***", "b": 1}],
        "token": "***",
        "max_tokens": 5,
    }
