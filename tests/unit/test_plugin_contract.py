"""The plugin contract: hooks, load-time checks of names, versions and signatures."""

from __future__ import annotations

import enum
import functools
import logging
from typing import Any

import pytest

from llmpool.exceptions import PluginLoadError
from llmpool.models import CallContext, Request
from llmpool.plugins import (
    HOOKS,
    PLUGIN_API_VERSION,
    ILLMPlugin,
    LLMPlugin,
    PluginContext,
    PluginManager,
    level_name,
)
from llmpool.plugins.validation import check_plugin, overridden_hooks


def _problem(cls: type[LLMPlugin]) -> str | None:
    return check_plugin(cls())


def test_alias_and_api_version() -> None:
    """ILLMPlugin is LLMPlugin, and the base class targets the current API."""
    assert ILLMPlugin is LLMPlugin
    assert LLMPlugin.api_version == PLUGIN_API_VERSION


def test_base_class_defaults_are_not_overridden() -> None:
    """A plugin that defines only some hooks is seen to implement only those."""

    class Only(LLMPlugin):
        name = "only"

        def on_attempt(self, ctx: CallContext, attempt: int) -> None:
            pass

        def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
            pass

    assert list(overridden_hooks(Only())) == ["on_attempt", "after_response"]
    assert list(overridden_hooks(LLMPlugin())) == []


def test_every_hook_of_the_base_class_matches_the_table() -> None:
    """The HOOKS table and the base class's hook signatures agree."""

    class All(LLMPlugin):
        name = "all"

    for hook in HOOKS:
        setattr(All, hook, getattr(LLMPlugin, hook))
    assert check_plugin(All()) is None


def test_misspelt_hook_is_a_load_error_with_a_suggestion() -> None:
    """on_retyr is refused, naming the plugin, the method and the close match."""

    class Typo(LLMPlugin):
        name = "typo"

        def on_retyr(self, ctx: CallContext, attempt: int, error: Exception, delay: float) -> None:
            pass

    problem = _problem(Typo)
    assert problem is not None
    assert "'typo'" in problem and "'on_retyr'" in problem and "'on_retry'" in problem


def test_misspelt_after_hook_is_a_load_error() -> None:
    """after_respones is refused too (the after_ prefix is reserved)."""

    class Typo(LLMPlugin):
        name = "typo2"

        def after_respones(self, ctx: CallContext, request: Request, response: Any) -> None:
            pass

    problem = _problem(Typo)
    assert problem is not None and "'after_response'" in problem


def test_wrong_parameter_name_is_a_load_error_with_expected_signature() -> None:
    """A hook whose parameter is misnamed is refused, showing the expected signature."""

    class Bad(LLMPlugin):
        name = "bad"

        def on_retry(self, ctx: CallContext, attempt: int, exc: Exception, delay: float) -> None:
            pass

    problem = _problem(Bad)
    assert problem is not None
    assert "'bad'" in problem and "on_retry" in problem
    assert "on_retry(self, ctx, attempt, error, delay)" in problem


@pytest.mark.parametrize(
    "source",
    [
        "def on_attempt(self, ctx): pass",
        "def on_attempt(self, ctx, attempt, extra): pass",
        "def on_attempt(self, ctx, attempt, *, must): pass",
        "async def on_attempt(self, ctx, attempt): pass",
        "on_attempt = 3",
    ],
)
def test_wrong_hook_shapes_are_load_errors(source: str) -> None:
    """Too few, too many, required keyword-only, async or non-callable hooks are refused."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    cls = type("Shaped", (LLMPlugin,), {"name": "shaped", **namespace})
    problem = _problem(cls)
    assert problem is not None and "on_attempt" in problem


@pytest.mark.parametrize(
    "source",
    [
        "def on_attempt(self, _ctx, _attempt): pass",
        "def on_attempt(self, ctx, attempt, extra=None): pass",
        "def on_attempt(self, *args): pass",
        "def on_attempt(self, ctx, attempt, *, flag=False): pass",
    ],
)
def test_compatible_hook_shapes_are_accepted(source: str) -> None:
    """Underscore-prefixed names, defaulted extras and *args are accepted."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    cls = type("Shaped", (LLMPlugin,), {"name": "shaped", **namespace})
    assert _problem(cls) is None


def test_decorated_hook_is_checked_through_wraps() -> None:
    """A hook wrapped with functools.wraps is checked against the wrapped signature."""

    def traced(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any) -> Any:
            return func(*args)

        return wrapper

    class Decorated(LLMPlugin):
        name = "decorated"

        @traced
        def on_attempt(self, ctx: CallContext, tries: int) -> None:
            pass

    problem = _problem(Decorated)
    assert problem is not None and "'tries'" in problem


def test_api_major_mismatch_is_a_load_error() -> None:
    """A plugin written for API 2.x does not load into llmpool's 1.x."""

    class Future(LLMPlugin):
        name = "future"
        api_version = "2.0"

    problem = _problem(Future)
    assert problem is not None and "2.0" in problem and PLUGIN_API_VERSION in problem


def test_api_minor_difference_is_accepted() -> None:
    """Only the major version has to match."""

    class Minor(LLMPlugin):
        name = "minor"
        api_version = "1.7"

    assert _problem(Minor) is None


@pytest.mark.parametrize("name", ["", "has space", "a/b", 3])
def test_invalid_names_are_load_errors(name: object) -> None:
    """A plugin name must be a short identifier-like string."""
    cls = type("Named", (LLMPlugin,), {"name": name})
    assert _problem(cls) is not None


def test_non_int_priority_is_a_load_error() -> None:
    """priority must be an int (ordering compares it)."""

    class Prio(LLMPlugin):
        name = "prio"
        priority = "high"  # type: ignore[assignment]

    assert "priority" in (_problem(Prio) or "")


def test_helper_methods_without_reserved_prefixes_are_fine() -> None:
    """Methods not named on_/before_/after_ are the plugin's own business."""

    class Helper(LLMPlugin):
        name = "helper"

        def _on_anything(self) -> None:
            pass

        def format_line(self) -> str:
            return ""

    assert _problem(Helper) is None


def test_load_errors_reach_the_manager_in_strict_mode() -> None:
    """Registering a misspelt plugin in strict mode raises PluginLoadError naming it."""

    class Typo(LLMPlugin):
        name = "typo"

        def on_stream_chnk(self, ctx: CallContext, chunk: Any) -> None:
            pass

    with pytest.raises(PluginLoadError) as info:
        PluginManager(strict=True).register_plugin(Typo)
    assert info.value.plugin == "typo"
    assert "on_stream_chunk" in info.value.reason


class Level(enum.Enum):
    NORMAL = "normal"
    CRITICAL = "critical"


@pytest.mark.parametrize(
    ("level", "name"), [(Level.CRITICAL, "critical"), ("WARN", "warn"), (Level.NORMAL, "normal")]
)
def test_level_name_reads_enums_and_strings(level: object, name: str) -> None:
    """level_name gives a lower-case name for an enum member or a string."""
    assert level_name(level) == name


def test_plugin_context_is_frozen() -> None:
    """PluginContext is an immutable value."""
    context = PluginContext(name="x", settings={"a": 1}, logger=logging.getLogger("x"))
    with pytest.raises(AttributeError):
        context.name = "y"  # type: ignore[misc]
