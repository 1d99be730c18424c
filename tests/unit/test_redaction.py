"""The one place that decides which headers are secret and how secrets are masked."""

from __future__ import annotations

import pytest

from llmpool.exceptions import ConfigError
from llmpool.redaction import (
    check_header,
    check_headers,
    is_secret_header,
    mask,
    mask_headers,
    redact_url,
)


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "Cookie",
        "X-Api-Key",
        "X-Goog-Api-Key",
        "X-Acme-Token",
    ],
)
def test_known_and_key_like_headers_are_secret(name: str) -> None:
    """Known credential headers, and names holding key/token words, are secret."""
    assert is_secret_header(name)


def test_declared_header_is_secret_and_plain_ones_are_not() -> None:
    """A provider's declared header counts; Content-Type and Accept do not."""
    assert is_secret_header("X-Acme", declared=("x-acme",))
    assert not is_secret_header("Content-Type")
    assert not is_secret_header("Accept")


def test_mask_headers_hides_only_secret_values() -> None:
    """Masking keeps plain values and replaces secret ones."""
    masked = mask_headers({"Authorization": "Bearer sk-123", "Accept": "text/plain"})
    assert masked == {"Authorization": "***", "Accept": "text/plain"}


def test_mask_keeps_ends_of_long_values_only() -> None:
    """A long secret shows 3 + 2 characters; a short one shows nothing."""
    assert mask("sk-abcdefghijklmnop") == "sk-...op"
    assert mask("short") == "***"
    assert mask(12345) == "***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:1/v1", "http://***@host:1/v1"),
        ("https://h/v1?api-key=s3cret&x=1", "https://h/v1?api-key=***&x=1"),
        ("https://h/v1", "https://h/v1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    """User info and credential-like query parameters are masked."""
    assert redact_url(url) == shown


@pytest.mark.parametrize("value", ["Bearer sk-secret\n", "a\rb", "x\x00y", "\x7f"])
def test_control_characters_in_a_value_are_refused_without_showing_it(value: str) -> None:
    """CR, LF, NUL and DEL are refused; the error names the header, never the value."""
    with pytest.raises(ConfigError) as info:
        check_header("Authorization", value, key="api_key")
    assert "Authorization" in str(info.value)
    assert "secret" not in str(info.value) and "secret" not in repr(info.value)
    assert info.value.key == "api_key"


def test_bad_names_and_types_are_refused() -> None:
    """A name with a space or colon, or a value that is not a string, is refused."""
    for name, value in [("X Y", "v"), ("X:Y", "v"), (3, "v"), ("X", 5), ("X", "caf\u20ac")]:
        with pytest.raises(ConfigError):
            check_headers({name: value})  # type: ignore[dict-item]
    check_headers({"X-Ok": "tab\tis fine"})
