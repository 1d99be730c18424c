"""One Client shared by 64 threads: every result checked, counters consistent, nothing leaked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import llmpool
from llmpool import exceptions as exc
from llmpool.testing import MockLLMServer

HI = [{"role": "user", "content": "hi"}]
THREADS = 64
CALLS = 200
EXPECTED = "Hello from the mock server."


def test_64_threads_x_200_mixed_calls_with_faults() -> None:
    """64 threads x 200 calls (JSON and streaming, 5% injected faults) through one Client."""
    faults = "status=429,retry_after_ms=1;status=503;reset;disconnect=0;truncate=0"
    with MockLLMServer(fault_rate=0.05, random_faults=faults, seed=7) as server:
        pool = llmpool.PoolConfig(max_connections=16, pool_timeout=60.0)
        with llmpool.Client(server.base_url, api_key="k", pool=pool, sleep=lambda s: None) as c:

            def work(worker: int) -> tuple[int, int]:
                ok = failed = 0
                for i in range(CALLS):
                    try:
                        if (worker + i) % 4 == 0:
                            with c.chat("m", HI, stream=True) as stream:
                                text = "".join(chunk.delta for chunk in stream)
                        else:
                            text = c.chat("m", HI).text
                    except (
                        exc.APIStatusError,
                        exc.TransportError,
                        exc.StreamInterrupted,
                        exc.IncompleteStream,
                    ):
                        failed += 1  # three faults in a row exhaust max_attempts=3
                        continue
                    assert text == EXPECTED
                    ok += 1
                return ok, failed

            with ThreadPoolExecutor(THREADS) as ex:
                results = [f.result() for f in [ex.submit(work, w) for w in range(THREADS)]]
            stats = c.stats()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    pool_stats = stats["pool"]
    assert ok + failed == THREADS * CALLS
    assert failed <= THREADS * CALLS * 0.001  # 0.05**3 odds per call
    assert stats["client"]["calls"] == THREADS * CALLS
    assert stats["client"]["errors"] == failed
    assert stats["client"]["retries"] > 0
    assert pool_stats["in_use"] == 0 and pool_stats["waiting"] == 0
    assert pool_stats["total_requests"] == (
        pool_stats["successful_requests"] + pool_stats["failed_requests"]
    )
    assert pool_stats["peak_in_use"] <= 16
    # a request the pool re-sent on a fresh connection reached the server twice
    assert server.request_count == pool_stats["total_requests"] + pool_stats["stale_retries"]
