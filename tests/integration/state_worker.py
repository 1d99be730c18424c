"""One worker process of the shared-state tests: a client with the ratelimit and
cache plugins on a Redis backend, N threads calling a server until a time.

    python state_worker.py CONFIG_JSON

Prints one JSON line: the admission times (Redis's TIME, read from the ratelimit
plugin's ticket), each call's tokens, errors by type
and the client's statistics.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import llmpool
from llmpool.models import CallContext, Request


class Stamp(llmpool.LLMPlugin):
    """Records when each call was admitted: Redis's TIME from the ratelimit ticket,
    else the host's clock right after the ratelimit plugin."""

    name = "stamp"
    priority = 21

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[tuple[float, int]] = []

    def before_request(self, ctx: CallContext, request: Request) -> None:
        ctx.state[self.name] = time.time()

    def after_response(self, ctx: CallContext, request: Request, response: Any) -> None:
        at = ctx.state.get(self.name)
        held = ctx.state.get("ratelimit")
        if held and held[1]:  # admitted by Redis: its ticket holds Redis's TIME
            sec, usec = held[1].split(".")[:2]
            at = int(sec) + int(usec) / 1_000_000
        if at is not None:
            with self.lock:
                self.times.append((at, response.usage.total_tokens))


def main() -> None:
    config = json.loads(sys.argv[1])
    stamp = Stamp()
    client = llmpool.Client(
        config["base_url"],
        config.get("api_key", "sk-shared"),
        plugins=[*config["plugins"], stamp],
        plugin_settings=config["settings"],
        state=llmpool.StateConfig(
            url=config["redis_url"], key_prefix=config["prefix"], timeout=0.2
        ),
        deadline=config.get("deadline", 30.0),
    )
    answered = 0
    errors: dict[str, int] = {}
    lock = threading.Lock()
    until = config["until"]
    messages = [{"role": "user", "content": config.get("prompt", "hi")}]
    extra: dict[str, Any] = config.get("call", {})

    def work() -> None:
        nonlocal answered
        while time.time() < until:
            try:
                result = client.chat("mock-model", messages, **extra)
            except llmpool.LLMPoolError as exc:
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            with lock:
                answered += bool(result.text)
            if config.get("once"):
                return

    with ThreadPoolExecutor(max_workers=config["threads"]) as pool:
        for future in [pool.submit(work) for _ in range(config["threads"])]:
            future.result()
    stats = client.stats()
    client.close()
    print(
        json.dumps(
            {
                "calls": stamp.times,
                "answered": answered,
                "errors": errors,
                "state": stats["state"],
                "plugins": {k: v["own"] for k, v in stats["plugins"]["plugins"].items()},
            }
        )
    )


if __name__ == "__main__":
    main()
