"""The `llmpool mock-server` command, run as a real process."""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import urllib3


def read_line(process: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """The first line the process prints, or fail after *timeout* seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "mock-server printed nothing"
    return process.stdout.readline().strip()


Run = Callable[..., "subprocess.Popen[str]"]


def ignore_sigint() -> None:
    """In the child before exec: SIGINT ignored, as for a command started from a
    background job (``nohup``, ``&``), where an ignored signal stays ignored
    across exec. The command must still stop on SIGINT: it installs its own
    handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def run() -> Iterator[Run]:
    """Start `python -m llmpool.cli mock-server ARGS`; kill whatever is left after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmpool.cli", "mock-server", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=ignore_sigint,  # noqa: PLW1509 (a signal setting, nothing that locks)
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_mock_server_command_serves_until_signalled(run: Run, sig: signal.Signals) -> None:
    """It prints the base URL, answers with the given reply and faults, and exits 0 on a
    signal, SIGINT included when it was started with SIGINT ignored."""
    process = run("--reply", "hi from cli", "--inject", "status=503,retry_after=1")
    base_url = read_line(process)
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/v1")
    http = urllib3.PoolManager(retries=False)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    first = http.request("POST", base_url + "/chat/completions", body=body)
    assert (first.status, first.headers["retry-after"]) == (503, "1")
    second = http.request("POST", base_url + "/chat/completions", body=body)
    assert second.json()["choices"][0]["message"]["content"] == "hi from cli"
    http.clear()
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "served 2 requests on 1 connections" in stderr


def test_mock_server_command_random_faults_and_connection_options(run: Run) -> None:
    """--fault-rate/--faults/--seed inject faults; --close-after-requests closes connections."""
    process = run(
        "--fault-rate", "1", "--faults", "status=529", "--seed", "1", "--close-after-requests", "1"
    )
    base_url = read_line(process)
    http = urllib3.PoolManager(retries=False)
    response = http.request("GET", base_url + "/models")
    assert response.status == 529
    http.clear()
    process.terminate()
    process.communicate(timeout=20)
    assert process.returncode == 0
