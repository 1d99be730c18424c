"""The ``usage`` plugin: tokens (and optionally cost) per model.

Counts the ``usage`` of every successful call and streamed call. With a
``prices`` setting it also adds up the cost::

    usage:
      per_tokens: 1000000          # prices are per million tokens (or 1000)
      prices:
        gpt-4o-mini: {prompt: 0.15, completion: 0.60}
        "*": {prompt: 1.0, completion: 2.0}     # any other model

Answers from the cache are counted as ``cached_calls`` and cost nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import attrs

from llmpool.exceptions import ConfigError
from llmpool.forking import renew_lock, reset_after_fork
from llmpool.models import CallContext, Request
from llmpool.plugins.base import LLMPlugin, PluginContext
from llmpool.plugins.builtin._settings import read_settings
from llmpool.validators import positive_int

__all__ = ["UsagePlugin", "UsageSettings"]

#: The model name counted for models beyond max_models.
OTHER_MODEL = "other"

_ALIASES = {
    "prompt": "prompt",
    "input": "prompt",
    "completion": "completion",
    "output": "completion",
}


def _number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(
            f"{where} must be a number >= 0, got {value!r}", key="prices", value=value
        )
    return float(value)


def _prices(value: Any) -> dict[str, tuple[float, float]]:
    """Normalise ``{model: {prompt|input: p, completion|output: c}}``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"prices must be a mapping, got {value!r}", key="prices", value=value)
    prices = {}
    for model, price in value.items():
        if not isinstance(price, Mapping) or not set(price) <= set(_ALIASES):
            raise ConfigError(
                f"prices[{model!r}] must map prompt/input and completion/output to numbers",
                key="prices",
                value=price,
            )
        parts = {_ALIASES[k]: _number(v, f"prices[{model!r}][{k!r}]") for k, v in price.items()}
        prices[str(model)] = (parts.get("prompt", 0.0), parts.get("completion", 0.0))
    return prices


def _per_tokens(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in (1000, 1_000_000):
        raise ConfigError(
            f"{attribute.name} must be 1000 or 1000000, got {value!r}",
            key=attribute.name,
            value=value,
        )


@attrs.frozen(kw_only=True)
class UsageSettings:
    """The ``usage`` plugin's settings. Immutable."""

    #: Price per ``per_tokens`` tokens, per model ("*": every other model).
    prices: dict[str, tuple[float, float]] = attrs.field(factory=dict, converter=_prices)
    #: The unit of the prices: 1000 or 1000000 tokens.
    per_tokens: int = attrs.field(default=1_000_000, validator=_per_tokens)
    #: Distinct models counted; further ones are counted as "other".
    max_models: int = attrs.field(default=1000, validator=positive_int)


@attrs.define
class _Totals:
    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None

    def add(self, other: _Totals) -> None:
        self.calls += other.calls
        self.cached_calls += other.cached_calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        if other.cost is not None:
            self.cost = (self.cost or 0.0) + other.cost


class UsagePlugin(LLMPlugin):
    """Accounts tokens and cost per model. Thread-safe: one lock guards the totals."""

    name = "usage"
    version = "1.0"
    priority = 800

    def __init__(self) -> None:
        self.settings = UsageSettings()
        # Guards _models.
        self._lock = threading.Lock()
        reset_after_fork(self, renew_lock)
        self._models: dict[str, _Totals] = {}

    def setup(self, context: PluginContext) -> None:
        self.settings = read_settings(UsageSettings, self.name, context.settings)

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        if response is not None and not request.stream:
            self._account(ctx, getattr(response, "usage", None), getattr(response, "model", None))

    def on_stream_end(self, ctx: CallContext, stream: Any) -> None:
        self._account(ctx, getattr(stream, "usage", None), None)

    def _account(self, ctx: CallContext, usage: Any, result_model: str | None) -> None:
        model = ctx.model or result_model or ""
        cached = bool(ctx.state.get("answered_by"))
        prompt = 0 if cached else int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = 0 if cached else int(getattr(usage, "completion_tokens", 0) or 0)
        total = 0 if cached else int(getattr(usage, "total_tokens", 0) or 0)
        price = self.settings.prices.get(model, self.settings.prices.get("*"))
        cost = None
        if price is not None:
            cost = (prompt * price[0] + completion * price[1]) / self.settings.per_tokens
        with self._lock:
            totals = self._models.get(model)
            if totals is None:
                if len(self._models) >= self.settings.max_models:
                    model = OTHER_MODEL
                totals = self._models.setdefault(model, _Totals())
            totals.add(_Totals(1, int(cached), prompt, completion, total, cost))

    def totals(self) -> dict[str, Any]:
        """Totals over all models and per model: calls, cached_calls, prompt_tokens,
        completion_tokens, total_tokens and cost (None where no price applies).
        """
        with self._lock:
            models = {name: attrs.asdict(t) for name, t in self._models.items()}
            overall = _Totals()
            for totals in self._models.values():
                overall.add(totals)
        return {**attrs.asdict(overall), "models": models}

    def reset(self) -> None:
        """Forget every total."""
        with self._lock:
            self._models.clear()

    def stats(self) -> dict[str, Any]:
        return self.totals()
