"""LLMPOOL_PLUGINS and the listing of installed plugins for the CLI."""

from __future__ import annotations

import sys

import pytest

from llmpool.exceptions import ConfigError
from llmpool.plugins import ENV_VAR, describe_installed, resolve_plugin_names


def test_configured_names_are_used_without_the_variable() -> None:
    """Without LLMPOOL_PLUGINS the configured names load, deduplicated, in order."""
    assert resolve_plugin_names(["logging", "usage", "logging"], environ={}) == [
        "logging",
        "usage",
    ]
    assert resolve_plugin_names(None, environ={}) == []


def test_variable_overrides_configured_names() -> None:
    """LLMPOOL_PLUGINS replaces the configured list, blanks ignored."""
    env = {ENV_VAR: " usage , metrics,,"}
    assert resolve_plugin_names(["logging"], environ=env) == ["usage", "metrics"]


def test_empty_variable_means_no_plugins() -> None:
    """LLMPOOL_PLUGINS="" turns every configured plugin off."""
    assert resolve_plugin_names(["logging", "cache"], environ={ENV_VAR: ""}) == []


def test_malformed_name_is_a_config_error() -> None:
    """A name with a space or a slash is refused, naming the variable."""
    with pytest.raises(ConfigError) as info:
        resolve_plugin_names([], environ={ENV_VAR: "logging, a b"})
    assert info.value.key == ENV_VAR


def test_describe_installed_lists_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-ins are listed with their distribution, and nothing is imported."""
    for name in [m for m in sys.modules if m.startswith("llmpool.plugins.builtin.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    rows = describe_installed(("llmpool.plugins",))
    by_name = {row["name"]: row for row in rows}
    assert {"logging", "metrics", "ratelimit", "cache", "usage"} <= set(by_name)
    assert by_name["cache"]["value"] == "llmpool.plugins.builtin.cache:CachePlugin"
    assert by_name["cache"]["distribution"] == "llmpool"
    assert "loaded" not in by_name["cache"]
    assert not any(m.startswith("llmpool.plugins.builtin.") for m in sys.modules)
    assert rows == sorted(rows, key=lambda r: (r["namespace"], r["name"]))


def test_describe_installed_with_load_reports_success() -> None:
    """load=True imports and validates each plugin and says whether it loaded."""
    rows = describe_installed(("llmpool.plugins",), load=True)
    builtin = [r for r in rows if r["distribution"] == "llmpool"]
    assert len(builtin) == 6
    assert all(r["loaded"] and r["error"] is None for r in builtin)
