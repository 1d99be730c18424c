"""The Redis backend against a real Redis: the same rules as the in-process one, shared."""

# ruff: noqa: F811 (the fixtures imported from redis_support are named as parameters)

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from redis_support import (  # noqa: F401 (fixtures)
    OwnRedis,
    free_port,
    own_redis,
    prefix,
    redis,
    redis_url_fixture,
)

import llmpool
from llmpool.exceptions import StateBackendError
from llmpool.state import MemoryBackend, RateLimits, StateConfig, open_backend
from llmpool.state.redis import RedisBackend
from llmpool.testing import MockLLMServer


def backend(url: str, prefix: str, **options: object) -> RedisBackend:
    made, owned = open_backend(StateConfig(url=url, key_prefix=prefix, **options))  # type: ignore[arg-type]
    assert owned and isinstance(made, RedisBackend)
    return made


def test_admission_follows_the_same_window_as_in_process(
    redis_url_fixture: str, prefix: str
) -> None:
    """Both backends admit the budget, refuse the next with the same wait, and reconcile."""
    limits = RateLimits(requests=3, tokens=100, window=5.0)
    for store in (backend(redis_url_fixture, prefix), MemoryBackend()):
        answers = [store.admit("s/m", limits, tokens=30) for _ in range(4)]
        assert [a.admitted for a in answers] == [True, True, True, False], store.name
        assert 4.5 < answers[3].wait <= 5.0
        first = store.admit("t/m", limits, tokens=90)
        assert first.admitted and first.ticket is not None
        assert not store.admit("t/m", limits, tokens=20).admitted
        store.reconcile("t/m", limits, first.ticket, tokens=10)
        assert store.admit("t/m", limits, tokens=90).admitted
        store.close()


def test_cooldowns_only_extend_and_expire_by_one_rule(redis_url_fixture: str, prefix: str) -> None:
    """A later deadline wins, an earlier one is ignored, expired ones are omitted, in both."""
    for store in (backend(redis_url_fixture, prefix), MemoryBackend()):
        now = time.time()
        store.set_cooldown("group", "a", now + 30)
        store.set_cooldown("group", "a", now + 5)  # shorter: ignored
        store.set_cooldown("group", "b", now + 0.2)
        store.set_cooldown("group", "c", now - 1)  # already over
        store.set_cooldown("other", "a", now + 60)
        found = store.get_cooldowns("group")
        assert set(found) == {"a", "b"} and found["a"] == pytest.approx(now + 30, abs=0.01)
        time.sleep(0.3)
        assert set(store.get_cooldowns("group")) == {"a"}
        store.set_cooldown("group", "a", now + 40)  # longer: wins
        assert store.get_cooldowns("group")["a"] == pytest.approx(now + 40, abs=0.01)
        store.close()


def test_a_cooldown_key_expires_with_its_last_deadline(redis_url_fixture: str, prefix: str) -> None:
    """The Redis key's TTL matches the latest deadline it holds."""
    store = backend(redis_url_fixture, prefix)
    store.set_cooldown("g", "a", time.time() + 10)
    ttl = redis.Redis.from_url(redis_url_fixture).pttl(store.cooldown_key("g"))
    assert 9_000 < ttl <= 10_000
    store.close()


def test_cache_entries_have_a_ttl_and_keys_hold_no_secret(
    redis_url_fixture: str, prefix: str
) -> None:
    """A client's cached answer is readable by another client of the same key only, with a TTL."""
    settings = {"cache": {"ttl": 30}}
    state = StateConfig(url=redis_url_fixture, key_prefix=prefix)
    with MockLLMServer() as server:
        a = llmpool.Client(
            server.base_url, "sk-key-a", plugins=["cache"], plugin_settings=settings, state=state
        )
        b = llmpool.Client(
            server.base_url, "sk-key-a", plugins=["cache"], plugin_settings=settings, state=state
        )
        c = llmpool.Client(
            server.base_url, "sk-key-c", plugins=["cache"], plugin_settings=settings, state=state
        )
        messages = [{"role": "user", "content": "a secret prompt"}]
        first = a.chat("mock-model", messages, temperature=0)
        assert b.chat("mock-model", messages, temperature=0) == first
        c.chat("mock-model", messages, temperature=0)
        assert len(server.requests) == 2  # b was answered from Redis, c was not
        assert b.plugins is not None and b.plugins.stats()["plugins"]["cache"]["own"]["hits"] == 1
        client = redis.Redis.from_url(redis_url_fixture)
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:c:*")]
        assert len(keys) == 2
        for key in keys:
            assert "sk-key" not in key and "secret" not in key
            assert 0 < client.pttl(key) <= 30_000
        for each in (a, b, c):
            each.close()


@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_an_unreachable_redis_follows_the_policy_and_never_hangs(policy: str) -> None:
    """Connection refused: allow answers the call (counted); deny fails it, typed."""
    state = StateConfig(url=f"redis://127.0.0.1:{free_port()}/0", on_backend_error=policy)
    settings = {"ratelimit": {"requests_per_minute": 10}, "cache": {}}
    with (
        MockLLMServer() as server,
        llmpool.Client(
            server.base_url,
            "k",
            plugins=["cache", "ratelimit"],
            plugin_settings=settings,
            state=state,
        ) as client,
    ):
        messages = [{"role": "user", "content": "hi"}]
        if policy == "allow":
            assert client.chat("mock-model", messages, temperature=0).text
            assert client.chat("mock-model", messages).text
            stats = client.stats()
            assert stats["state"]["errors"] >= 3
            assert stats["plugins"]["plugins"]["ratelimit"]["own"]["allowed_on_error"] == 2
        else:
            with pytest.raises(StateBackendError) as info:
                client.chat("mock-model", messages)
            assert info.value.backend == "redis" and "127.0.0.1" not in str(info.value)
            assert len(server.requests) == 0


def test_a_stopped_redis_costs_no_more_than_the_state_timeout(own_redis: OwnRedis) -> None:
    """A Redis that accepts nothing more after a kill: every operation fails within bounds and
    the backend reconnects by itself when a server is back on the port."""
    store = backend(own_redis.url, "p", timeout=0.2)
    limits = RateLimits(requests=100, window=60.0)
    assert store.admit("s", limits).admitted
    own_redis.kill()
    with pytest.raises(StateBackendError):
        store.admit("s", limits)
    own_redis.start()
    assert store.admit("s", limits).admitted  # the first after the restart reconnects
    assert store.stats()["errors"] == 1
    store.close()


def test_a_readonly_replica_is_a_backend_error(own_redis: OwnRedis, redis_url_fixture: str) -> None:
    """READONLY from a replica is reported as a backend failure, not a crash."""
    client = own_redis.client()
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a master that is not there
    store = backend(own_redis.url, "p")
    with pytest.raises(StateBackendError) as info:
        store.admit("s", RateLimits(requests=1))
    assert info.value.reason == "ReadOnlyError"
    client.execute_command("REPLICAOF", "NO", "ONE")
    assert store.admit("s", RateLimits(requests=1)).admitted
    store.close()


def test_a_refund_travels_with_the_next_admission_and_a_debt_goes_at_once(
    redis_url_fixture: str, prefix: str
) -> None:
    """One round trip per call: usage below the reservation waits for the scope's next
    admission from the same backend (until then others see the reservation, never less);
    usage above it is sent before reconcile returns, without waiting for the reply (read,
    in order, by the connection's next request)."""
    limits = RateLimits(tokens=100, window=60.0)
    a, b = backend(redis_url_fixture, prefix), backend(redis_url_fixture, prefix)
    first = a.admit("s/m", limits, tokens=60)
    assert first.admitted and first.ticket is not None
    trips = a.stats()["round_trips"]
    a.reconcile("s/m", limits, first.ticket, tokens=10)
    assert a.stats()["round_trips"] == trips and a.stats()["deferred_pending"] == 1
    assert not b.admit("s/m", limits, tokens=50).admitted  # 60 still reserved
    assert a.admit("s/m", limits, tokens=30).admitted  # carries the refund: 10 + 30
    assert a.stats()["round_trips"] == trips + 1 and a.stats()["deferred_pending"] == 0
    second = b.admit("s/m", limits, tokens=50)
    assert second.admitted and second.ticket is not None  # 90 of 100
    trips = b.stats()["round_trips"]
    b.reconcile("s/m", limits, second.ticket, tokens=60)  # a debt of 10: sent at once
    assert b.stats()["round_trips"] == trips and b.stats()["sent_without_waiting"] == 1
    assert not b.admit("s/m", limits, tokens=5).admitted  # 100 used (the reply read first)
    assert not a.admit("s/m", limits, tokens=5).admitted
    used = redis.Redis.from_url(redis_url_fixture).hget(a._window_keys("s/m")[1], "used")
    assert used == b"100"
    assert b.stats()["errors"] == 0 and b.stats()["unconfirmed"] == 0
    for store in (a, b):
        store.close()


def test_a_debt_sent_without_waiting_is_read_on_close_and_its_error_recorded(
    own_redis: OwnRedis,
) -> None:
    """A reconciliation sent without waiting has its reply read by the next request on
    that connection, or by close(); an error reply (a READONLY replica) is recorded then,
    as a backend error, and the call that sent it lost nothing."""
    limits = RateLimits(tokens=100, window=60.0)
    store = backend(own_redis.url, "p")
    ticket = store.admit("s/m", limits, tokens=10).ticket
    assert ticket is not None
    store.reconcile("s/m", limits, ticket, tokens=40)  # a debt, sent without waiting
    store.close()  # reads its reply
    client = own_redis.client()
    assert client.hget(store._window_keys("s/m")[1], "used") == b"40"
    assert store.stats()["errors"] == 0 and store.stats()["unconfirmed"] == 0

    other = backend(own_redis.url, "p")
    ticket = other.admit("s/m", limits, tokens=10).ticket
    assert ticket is not None
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # read-only now
    try:
        other.reconcile("s/m", limits, ticket, tokens=40)  # sent; the error comes later
        assert other.stats()["errors"] == 0
        with pytest.raises(StateBackendError):
            other.admit("s/m", limits, tokens=1)  # reads the late error, then its own
        stats = other.stats()
        assert stats["errors"] == 2 and stats["errors_by_kind"] == {"ReadOnlyError": 2}
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")
    other.close()


def test_a_replacement_sent_twice_counts_once_and_close_sends_what_is_left(
    redis_url_fixture: str, prefix: str
) -> None:
    """A reconciliation that may or may not have arrived is sent again safely; closing a
    backend hands its deferred refunds to Redis."""
    limits = RateLimits(tokens=100, window=60.0)
    store = backend(redis_url_fixture, prefix)
    meta = store._window_keys("s/m")[1]
    client = redis.Redis.from_url(redis_url_fixture)
    ticket = store.admit("s/m", limits, tokens=80).ticket
    assert ticket is not None
    store._send_deferred("s/m", [(ticket, 30)], None)
    store._send_deferred("s/m", [(ticket, 30)], None)
    assert client.hget(meta, "used") == b"30"
    other = store.admit("s/m", limits, tokens=20).ticket
    assert other is not None
    store.reconcile("s/m", limits, other, tokens=5)
    assert client.hget(meta, "used") == b"50"
    store.close()
    assert client.hget(meta, "used") == b"35"


def test_an_idle_connection_closed_by_a_restart_is_replaced_without_an_error(
    own_redis: OwnRedis,
) -> None:
    """Redis restarted while a connection sat idle: the next operation reconnects once and
    succeeds (scripts loaded again), no failure reported."""
    store = backend(own_redis.url, "p", timeout=1.0)
    limits = RateLimits(requests=100, tokens=1000, window=60.0)
    assert store.admit("s", limits, tokens=10).admitted
    own_redis.kill()
    own_redis.start()
    assert store.admit("s", limits, tokens=10).admitted
    stats = store.stats()
    assert stats["errors"] == 0 and stats["reconnects"] == 1 and stats["script_loads"] == 2
    store.close()


def test_a_forked_child_opens_its_own_connections_and_drops_the_parents_refunds(
    redis_url_fixture: str, prefix: str
) -> None:
    """The child never writes on the parent's socket nor sends the parent's deferred refund;
    the parent's connection still works after the child exits."""
    limits = RateLimits(tokens=100, window=60.0)
    store = backend(redis_url_fixture, prefix)
    ticket = store.admit("s/m", limits, tokens=50).ticket
    assert ticket is not None
    store.reconcile("s/m", limits, ticket, tokens=10)  # deferred in the parent
    parent_link = store._free[-1]
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only when every check holds
        ok = not store._free and store.stats()["deferred_pending"] == 0
        ok = ok and store.admit("s/m", limits, tokens=50).admitted  # 50 + 50: no refund
        ok = ok and not store.admit("s/m", limits, tokens=1).admitted
        store.close()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._free[-1] is parent_link
    assert store.admit("s/m", limits, tokens=40).admitted  # the refund arrives: 10 + 50 + 40
    stats = store.stats()
    assert stats["errors"] == 0 and stats["reconnects"] == 0  # the same socket, unharmed
    store.close()


def test_the_calls_time_left_bounds_a_reply_below_the_state_timeout(own_redis: OwnRedis) -> None:
    """A Redis that stops answering (SIGSTOP) for 2 s: an admission given 50 ms fails with a
    timeout before Redis resumes (with the state's 5 s it would have been answered), and the
    next operation works on a new connection."""
    store = backend(own_redis.url, "p", timeout=5.0)
    limits = RateLimits(requests=100, window=60.0)
    assert store.admit("s", limits).admitted
    assert own_redis.process is not None
    pid = own_redis.process.pid
    resume = threading.Timer(2.0, os.kill, (pid, signal.SIGCONT))
    os.kill(pid, signal.SIGSTOP)
    resume.start()
    try:
        with pytest.raises(StateBackendError) as info:
            store.admit("s", limits, timeout=0.05)
        assert info.value.reason == "TimeoutError"
    finally:
        resume.join()
    assert store.admit("s", limits).admitted
    assert store.stats()["errors"] == 1
    store.close()
