"""Idempotency keys: unique per call, in threads and across a fork, without a system call each."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from llmpool.request_path import _KEYS

KEY = re.compile(r"^llmpool-[0-9a-f]{32}$")


def test_keys_are_unique_under_threads_and_keep_their_format() -> None:
    """8 threads drawing 2,000 keys each get 16,000 distinct keys of the usual shape."""
    with ThreadPoolExecutor(8) as pool:
        batches = [pool.submit(lambda: [_KEYS.next() for _ in range(2000)]) for _ in range(8)]
        keys = [key for batch in batches for key in batch.result()]
    assert len(set(keys)) == len(keys) == 16_000
    assert all(KEY.match(key) for key in keys)


def test_a_forked_child_draws_keys_of_its_own() -> None:
    """The child's keys start from a new random prefix, never repeating the parent's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, _KEYS.next().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = _KEYS.next()
    assert KEY.match(child)
    assert child[:24] != parent[:24]  # "llmpool-" and the 16-digit prefix differ
