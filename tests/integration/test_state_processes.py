"""Shared state across real processes: one budget, one cache, a Redis killed mid-run.

Windows are scaled down to keep the tests short (the algorithm does not
depend on the window's length): 4 processes x 8 threads share 200 requests
per 2 s (6000/min) for three windows; the tokens test shares 3000 tokens
per 2 s (usage below the reservations: the refunds travel with the next
admissions). Every figure checked is a count, never a duration.
"""

# ruff: noqa: F811 (the fixtures imported from redis_support are named as parameters)

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis_support import (  # noqa: F401 (fixtures)
    OwnRedis,
    own_redis,
    prefix,
    redis_url_fixture,
)

from llmpool.testing import MockLLMServer

WORKER = Path(__file__).with_name("state_worker.py")
ROOT = Path(__file__).resolve().parents[2]
WINDOW = 2.0


def run_workers(config: dict[str, Any], processes: int = 4) -> list[dict[str, Any]]:
    """Start *processes* workers with *config*; their reports once all have ended."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


def windows(calls: list[tuple[float, int]], start: float, count: int) -> list[tuple[int, int]]:
    """(calls, tokens) admitted in each of *count* consecutive windows from *start*."""
    out = []
    for i in range(count):
        low, high = start + i * WINDOW, start + (i + 1) * WINDOW
        inside = [tokens for at, tokens in calls if low <= at < high]
        out.append((len(inside), sum(inside)))
    return out


def sliding_max(calls: list[tuple[float, int]], index: int) -> int:
    """The most calls (index 0) or tokens (index 1) admitted in any window of WINDOW seconds."""
    ordered = sorted(calls)
    best, j, total = 0, 0, 0
    for i, (at, tokens) in enumerate(ordered):
        total += 1 if index == 0 else tokens
        while ordered[j][0] <= at - WINDOW:
            total -= 1 if index == 0 else ordered[j][1]
            j += 1
        best = max(best, total)
        del i
    return best


@pytest.mark.slow
def test_four_processes_share_one_request_budget(redis_url_fixture: str, prefix: str) -> None:
    """Admitted calls never exceed the budget in any window and use at least 90 % of it."""
    budget = 200
    with MockLLMServer() as server:
        start = time.time() + 1.5  # the workers' imports
        config = {
            "base_url": server.base_url,
            "redis_url": redis_url_fixture,
            "prefix": prefix,
            "threads": 8,
            "until": start + 3 * WINDOW,
            "plugins": ["ratelimit"],
            "settings": {
                "ratelimit": {"requests_per_minute": budget * 30, "window": WINDOW, "timeout": 10}
            },
        }
        reports = run_workers(config)
    calls = [tuple(c) for r in reports for c in r["calls"]]
    assert all(r["errors"] == {} for r in reports)
    assert sliding_max(calls, 0) <= budget * 1.01
    first = min(at for at, _ in calls)
    for admitted, _ in windows(calls, first, 2):  # the last window is cut short by `until`
        assert admitted >= 0.9 * budget
    assert sum(r["answered"] for r in reports) == len(calls)


@pytest.mark.slow
def test_four_processes_share_one_token_budget(redis_url_fixture: str, prefix: str) -> None:
    """Tokens used never exceed the tokens budget in any window and use at least 90 % of it."""
    budget = 3000
    with MockLLMServer() as server:
        start = time.time() + 1.5
        config = {
            "base_url": server.base_url,
            "redis_url": redis_url_fixture,
            "prefix": prefix,
            "threads": 8,
            "until": start + 3 * WINDOW,
            "plugins": ["ratelimit"],
            "call": {"max_tokens": 10},
            "settings": {
                "ratelimit": {"tokens_per_minute": budget * 30, "window": WINDOW, "timeout": 10}
            },
        }
        reports = run_workers(config)
    calls = [tuple(c) for r in reports for c in r["calls"]]
    assert all(r["errors"] == {} for r in reports)
    assert sliding_max(calls, 1) <= budget * 1.01
    first = min(at for at, _ in calls)
    for _, tokens in windows(calls, first, 2):
        assert tokens >= 0.9 * budget
    # usage (about 11 tokens) below each reservation (about 30): every process gave its
    # tokens back with its next admission, no round trip of its own
    assert all(r["state"]["deferred_reconciles"] > 0 for r in reports)


@pytest.mark.slow
def test_a_call_cached_in_one_process_is_a_hit_in_another(
    redis_url_fixture: str, prefix: str
) -> None:
    """Process B gets process A's answer from Redis: the server sees one request."""
    with MockLLMServer() as server:
        config = {
            "base_url": server.base_url,
            "redis_url": redis_url_fixture,
            "prefix": prefix,
            "threads": 1,
            "once": True,
            "until": time.time() + 60,
            "plugins": ["cache"],
            "settings": {"cache": {"ttl": 60}},
            "call": {"temperature": 0},
        }
        (a,) = run_workers(config, processes=1)
        (b,) = run_workers(config, processes=1)
        assert len(server.requests) == 1
    assert a["plugins"]["cache"]["stores"] == 1 and a["plugins"]["cache"]["hits"] == 0
    assert b["plugins"]["cache"]["hits"] == 1 and b["answered"] == 1


@pytest.mark.slow
def test_redis_killed_and_restarted_mid_run(own_redis: OwnRedis) -> None:
    """No call fails or goes unanswered while Redis is down; the counters show the outage and
    admissions through Redis resume after the restart."""
    with MockLLMServer() as server:
        start = time.time() + 1.5
        config = {
            "base_url": server.base_url,
            "redis_url": own_redis.url,
            "prefix": "kill",
            "threads": 8,
            "until": start + 4.5,
            "deadline": 5.0,
            "plugins": ["cache", "ratelimit"],
            "settings": {
                "ratelimit": {"requests_per_minute": 60_000, "timeout": 5},
                "cache": {"ttl": 30},
            },
        }
        procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER), json.dumps(config)], stdout=subprocess.PIPE, cwd=ROOT
            )
            for _ in range(4)
        ]
        time.sleep(max(0.0, start + 1.0 - time.time()))
        own_redis.kill()
        time.sleep(1.0)
        own_redis.start()
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        requests = server.request_count  # the recorder keeps only the last 10,000
    assert all(r["errors"] == {} for r in reports)
    assert sum(r["answered"] for r in reports) == requests > 0
    assert sum(r["state"]["errors"] for r in reports) > 0
    limiter = [r["plugins"]["ratelimit"] for r in reports]
    assert sum(p["allowed_on_error"] for p in limiter) > 0
    admitted_by_redis = sum(p["admitted"] for p in limiter)
    assert admitted_by_redis > sum(p["allowed_on_error"] for p in limiter)
    client = own_redis.client()
    assert list(client.scan_iter(match="{kill:rl:*"))  # written after the restart
