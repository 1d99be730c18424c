"""Secrets in configuration: never shown in errors or output, warned about in readable files."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from llmpool import ConfigError, load_config

SECRET = "98765432101234"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "llmpool.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"client:\n  api_key: {SECRET}\n", "client.api_key"),
        (f"client:\n  api_key: [{SECRET}]\n", "client.api_key"),
        (f"connection_pool:\n  proxy_url: {SECRET}\n", "connection_pool.proxy_url"),
        (f"client:\n  default_headers: {{Authorization: {SECRET}}}\n", "client.default_headers"),
        (f"client:\n  default_headers: {SECRET}\n", "client.default_headers"),
    ],
)
def test_a_bad_secret_value_is_never_shown(tmp_path: Path, text: str, key: str) -> None:
    """A wrong-typed secret names the key, file and line, never the value (not even in state)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert err.key == key
    assert err.file == str(path) and err.line == 2
    assert SECRET not in str(err)
    assert SECRET.encode() not in pickle.dumps(err)


@pytest.mark.parametrize(
    "headers",
    ["{Authorization: 12345}", '{Authorization: "Bearer sk-1\\n"}', '{"Bad Name": x}'],
)
def test_load_config_checks_default_headers(tmp_path: Path, headers: str) -> None:
    """A header that cannot be sent (not a string, a control character, a bad name) is refused."""
    path = write(tmp_path, f"client:\n  default_headers: {headers}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "client.default_headers"
    assert "sk-1" not in str(info.value)


@pytest.mark.parametrize("header", ["Authorization", "X-Goog-Api-Key", "X-Acme-Token", "Cookie"])
def test_a_secret_header_in_a_readable_file_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    """A credential only in default_headers warns like api_key, naming the key, not the value."""
    path = write(tmp_path, f"client:\n  default_headers: {{{header}: hdr-secret-value}}\n", 0o640)
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        load_config(path, environ={})
    messages = [r.getMessage() for r in caplog.records]
    assert any("readable by other users" in m and header in m for m in messages), messages
    assert all("hdr-secret-value" not in m for m in messages)


def test_a_plain_header_or_an_environment_key_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A non-secret header, or a key that came from the environment, is no reason to warn."""
    path = write(tmp_path, "client:\n  default_headers: {X-Trace: abc}\n", 0o644)
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        load_config(path, environ={"LLMPOOL_API_KEY": "sk-from-env-123456"})
    assert not caplog.records


def test_to_dict_masks_every_credential_header(tmp_path: Path) -> None:
    """to_dict masks known, key-like and provider-declared secret headers, and keeps others."""
    headers = (
        "{X-Goog-Api-Key: g-secret, X-Acme-Token: t-secret, Authorization: a-secret,"
        " Cookie: c-secret, X-Custom: d-secret, X-Trace: visible}"
    )
    config = load_config(write(tmp_path, f"client:\n  default_headers: {headers}\n"), environ={})
    shown = config.to_dict(secret_headers=("x-custom",))["client"]["default_headers"]
    assert shown == {
        "X-Goog-Api-Key": "***",
        "X-Acme-Token": "***",
        "Authorization": "***",
        "Cookie": "***",
        "X-Custom": "***",
        "X-Trace": "visible",
    }
    assert config.to_dict()["client"]["default_headers"]["X-Custom"] == "d-secret"


def test_to_dict_masks_the_api_key_like_the_rest_of_the_package() -> None:
    """The API key is masked by redaction.mask (a short key shows nothing; None stays None)."""
    assert (
        load_config({"client": {"api_key": "short"}}, environ={}).to_dict()["client"]["api_key"]
        == "***"
    )
    assert load_config({}, environ={}).to_dict()["client"]["api_key"] is None


def test_to_dict_and_repr_mask_url_credentials() -> None:
    """base_url and proxy_url keep their host but lose user and password in to_dict and repr."""
    config = load_config(
        {
            "client": {"base_url": "http://user:pa55word@llm.example/v1"},
            "connection_pool": {"proxy_url": "http://pu:proxypass@proxy.example:3128"},
        },
        environ={},
    )
    shown = config.to_dict()
    assert shown["client"]["base_url"] == "http://***@llm.example/v1"
    assert shown["connection_pool"]["proxy_url"] == "http://***@proxy.example:3128"
    for text in (str(shown), repr(config)):
        assert "pa55word" not in text and "proxypass" not in text
    assert "llm.example" in repr(config)


def test_credentials_in_a_url_of_a_readable_file_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A password in base_url or proxy_url of a readable file is warned about, not shown."""
    text = (
        "client: {base_url: 'http://user:pa55word@llm.example/v1'}\n"
        "connection_pool: {proxy_url: 'http://pu:proxypass@proxy.example:3128'}\n"
    )
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        load_config(write(tmp_path, text, 0o644), environ={})
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "client.base_url" in messages and "connection_pool.proxy_url" in messages
    assert "pa55word" not in messages and "proxypass" not in messages
