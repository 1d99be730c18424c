"""End to end: the example web app (examples/webapp) under gunicorn, in front of MockLLMServer.

gunicorn runs as a real subprocess (``sys.executable -m gunicorn``) with the
example's own ``gunicorn.conf.py``: the app preloaded in the master (which
builds and warms the one llmpool client), 2 gthread workers x 8 threads, on a
free 127.0.0.1 port, with a temporary ``PROMETHEUS_MULTIPROC_DIR``. The
upstream is a :class:`~llmpool.testing.MockLLMServer` in this process: echo
replies, 20 ms latency, 2 % random faults (a retryable 503, a 400 and a 401).
32 threads drive the front, each with its own keep-alive connection.

Every front request carries a unique token; the echo reply carries it back,
and the mock's records tie every upstream attempt to its token, so each
answer is checked against exactly what the upstream did for that request.
Counts only: no test asserts a wall time.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmpool.testing import Fault, FaultKind, MockLLMServer, RecordedRequest

_MISSING = [
    name
    for name in ("flask", "gunicorn", "prometheus_client")
    if not importlib.util.find_spec(name)
]
if _MISSING:
    pytest.skip(
        f"needs {', '.join(_MISSING)}: the webapp and metrics extras, which tox's test envs "
        "(py311, py312, py313) install; or pip install '.[webapp,metrics]'",
        allow_module_level=True,
    )

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"
WORKERS = 2
THREADS = 8
CONNECTIONS = 32
MODEL = "gpt-4o-mini"
#: Seconds llmpool waits for an upstream read (LLMPOOL_TIMEOUT): ends the stalled stream.
READ_TIMEOUT = 2
#: The random upstream faults and the status the app answers when a call ends on one.
FRONT_STATUS = {503: 502, 400: 400, 401: 502}
RETRYABLE = {503}
MAX_ATTEMPTS = 3  # examples/webapp/llmpool.yaml
TOKEN = re.compile(r"tok-[0-9a-f]{32}")
#: Bounds for waiting on processes: a hung gunicorn fails the test instead of hanging it.
BOOT_POLLS = 600
POLL = 0.05


# --------------------------------------------------------------------------- gunicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn:
    """The example app under gunicorn in a new session (its own process group)."""

    def __init__(self, upstream: MockLLMServer, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.log = workdir / "gunicorn.log"
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        # Only what the test sets: a developer's LLMPOOL_*, WEBAPP_* or
        # PROMETHEUS_* variables must not change the app under test.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("LLMPOOL_", "WEBAPP_", "PROMETHEUS_", "OPENAI_"))
        }
        self.env = {
            **inherited,
            "LLMPOOL_BASE_URL": upstream.base_url,
            "LLMPOOL_TIMEOUT": str(READ_TIMEOUT),
            "OPENAI_API_KEY": "sk-test",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "WEBAPP_WORKERS": str(WORKERS),
            "WEBAPP_THREADS": str(THREADS),
            "WEBAPP_MODEL": MODEL,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(WEBAPP / "gunicorn.conf.py"),
            "--chdir",
            str(WEBAPP),
            "--bind",
            f"127.0.0.1:{self.port}",
            "app:app",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        for _ in range(BOOT_POLLS):
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.tail()}")
            if len(self.workers()) == WORKERS and self._healthy():
                return self
            time.sleep(POLL)
        raise AssertionError(f"gunicorn did not become ready:\n{self.tail()}")

    def _healthy(self) -> bool:
        try:
            status, _ = get(self.port, "/healthz")
        except OSError:
            return False
        return status == 200

    def workers(self) -> list[int]:
        """The pids of the live workers (the master's children)."""
        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child.pid)
        return alive

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left."""
        if self.proc is None:
            return
        group = self.proc.pid  # start_new_session: the master leads its own group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.proc.wait(timeout=5)


# --------------------------------------------------------------------------- front client


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Call:
    """One front request and what came back (status None: no response at all)."""

    token: str
    message: str
    port: int = 0  # the client-side port of the connection it was sent on
    status: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class FrontConnection:
    """One keep-alive connection to gunicorn, reopened when it breaks or is closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def _socket(self) -> http.client.HTTPConnection:
        sock = self.conn.sock if self.conn is not None else None
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.close()  # readable while idle: the server closed it, do not send on it
        if self.conn is None or self.conn.sock is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.connect()
        return self.conn

    def post(self, call: Call, path: str = "/chat") -> Call:
        conn = self._socket()
        assert conn.sock is not None
        call.port = conn.sock.getsockname()[1]
        try:
            conn.request(
                "POST",
                path,
                body=json.dumps({"message": call.message}),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            self.close()
            return call
        call.status = response.status
        call.body = json.loads(raw)
        if response.will_close:
            self.close()
        return call

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def new_call(kind: str = "chat") -> Call:
    token = f"tok-{uuid.uuid4().hex}"
    return Call(token=token, message=f"{kind} {token} please")


def drive(
    port: int,
    total: int,
    on_answer: Callable[[int], None] | None = None,
) -> list[Call]:
    """*total* chat calls from CONNECTIONS threads, each on its own keep-alive connection."""
    calls = [new_call() for _ in range(total)]
    lock = threading.Lock()
    state = {"next": 0, "answered": 0}

    def worker() -> None:
        front = FrontConnection(port)
        try:
            while True:
                with lock:
                    index = state["next"]
                    state["next"] += 1
                if index >= total:
                    return
                call = front.post(calls[index])
                if call.status is not None and on_answer is not None:
                    with lock:
                        state["answered"] += 1
                        answered = state["answered"]
                    on_answer(answered)
        finally:
            front.close()

    with ThreadPoolExecutor(CONNECTIONS) as executor:
        for future in [executor.submit(worker) for _ in range(CONNECTIONS)]:
            future.result()
    return calls


# --------------------------------------------------------------------------- checks


def attempts_by_token(upstream: MockLLMServer) -> dict[str, list[RecordedRequest]]:
    """The upstream chat requests (every attempt), by the token of their message."""
    found: dict[str, list[RecordedRequest]] = defaultdict(list)
    for record in upstream.requests:
        if record.path != "/v1/chat/completions" or not isinstance(record.json, dict):
            continue
        match = TOKEN.search(str(record.json["messages"][-1]["content"]))
        if match:
            found[match.group()].append(record)
    return found


def check_answer(call: Call, attempts: list[RecordedRequest]) -> str | None:
    """Why *call*'s answer is not its own request's, or None when it is.

    A 200 must echo the call's own message and come from an attempt the
    upstream answered normally; any other status must be the app's mapping
    of the fault the upstream played on the call's last attempt (a retryable
    503 only after every attempt got one).
    """
    if not attempts:
        return f"{call.token}: answered {call.status} but never reached the upstream"
    last = attempts[-1].fault
    if call.status == 200:
        if call.body.get("reply") != call.message:
            return f"{call.token}: got the reply {call.body.get('reply')!r}"
        if last is not None:
            return f"{call.token}: 200 although the last attempt got {last}"
        return None
    if last is None or last.kind is not FaultKind.STATUS:
        return f"{call.token}: {call.status} {call.body} but the last attempt was answered"
    code = last.status_code
    if call.status != FRONT_STATUS.get(code) or call.body.get("upstream_status") != code:
        return f"{call.token}: {call.status} {call.body} for an upstream {code}"
    if code in RETRYABLE and len(attempts) != MAX_ATTEMPTS:
        return f"{call.token}: gave up on a {code} after {len(attempts)} attempts"
    return None


def chat_counters(port: int) -> Counter[str]:
    """The app's /metrics, summed over every worker: chat calls by outcome, and retries."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.labels.get("operation") != "chat":
                continue
            if sample.name == "llmpool_requests_total":
                counts[sample.labels["outcome"]] += int(sample.value)
            elif sample.name == "llmpool_retries_total":
                counts["retries"] += int(sample.value)
    return counts


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockLLMServer]:
    with MockLLMServer(
        echo=True,
        latency=0.02,
        fault_rate=0.02,
        random_faults=[Fault.status(503), Fault.status(400), Fault.status(401)],
        seed=15,
        max_recorded=100_000,
    ) as server:
        yield server


@contextlib.contextmanager
def no_faults(upstream: MockLLMServer) -> Iterator[MockLLMServer]:
    """The upstream without random faults for a while (the app's boot, a stream test)."""
    upstream.configure(fault_rate=0.0)
    try:
        yield upstream
    finally:
        upstream.configure(fault_rate=0.02)


@pytest.fixture
def quiet_upstream(upstream: MockLLMServer) -> Iterator[MockLLMServer]:
    """The upstream without random faults, for the duration of one test."""
    with no_faults(upstream):
        yield upstream


@pytest.fixture(scope="module")
def webapp(
    upstream: MockLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gunicorn, int]]:
    """gunicorn with the example app; yields it and the upstream connection count before it."""
    opened_before = upstream.connections_opened
    server = Gunicorn(upstream, tmp_path_factory.mktemp("webapp"))
    try:
        with no_faults(upstream):  # the master's warm-up call must not draw a 401
            server.start()
        yield server, opened_before
    finally:
        server.stop()


# --------------------------------------------------------------------------- tests


def test_every_answer_is_its_own_and_connections_stay_within_the_threads(
    webapp: tuple[Gunicorn, int], upstream: MockLLMServer
) -> None:
    """2,000 calls from 32 connections through 2 workers x 8 threads: each gets its own echo
    (or the mapped status of its upstream fault), the upstream sees at most workers x threads
    connections (+1, the master's warm-up), and /metrics adds up to exactly the calls made."""
    server, opened_before = webapp
    before = chat_counters(server.port)

    calls = drive(server.port, 2_000)

    attempts = attempts_by_token(upstream)
    lost = [call for call in calls if call.status is None]
    assert not lost, f"{len(lost)} calls got no answer, e.g. {lost[0]}\n{server.tail()}"
    wrong = [why for call in calls if (why := check_answer(call, attempts[call.token]))]
    assert not wrong, f"{len(wrong)} wrong answers: {wrong[:5]}"
    statuses = Counter(call.status for call in calls)
    assert statuses[200] >= 1_900, statuses  # the faults are rare; the point is the checks

    opened = upstream.connections_opened - opened_before
    assert opened <= WORKERS * THREADS + 1, f"{opened} upstream connections"

    after = chat_counters(server.port)
    made = sum(len(attempts[call.token]) for call in calls)
    assert after["ok"] - before["ok"] == statuses[200]
    assert after["error"] - before["error"] == len(calls) - statuses[200]
    assert after["retries"] - before["retries"] == made - len(calls)


def test_each_worker_answers_with_its_own_memory_thread(webapp: tuple[Gunicorn, int]) -> None:
    """Both forked workers answer, each from its own pid with one running llmpool-memory
    sampler thread of its own that has sampled since the fork."""
    server, _ = webapp
    workers = set(server.workers())
    seen: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(8) as executor:
        for _ in range(100):  # new connections land on either worker; both show up quickly
            for status, raw in executor.map(lambda _: get(server.port, "/stats"), range(8)):
                assert status == 200, raw
                data = json.loads(raw)
                seen[data["pid"]] = data
            if len(seen) == WORKERS:
                break
    assert set(seen) == workers
    assert server.proc is not None and server.proc.pid not in seen
    for data in seen.values():
        assert data["threads"].count("llmpool-memory") == 1, data["threads"]
        assert data["memory"]["running"] is True
        assert data["memory"]["samples"] >= 1


def sse_events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a server-sent event stream, as they arrive."""
    buffer = b""
    while piece := response.read1(65536):
        buffer += piece
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines())
            yield fields["event"], json.loads(fields["data"])


def open_stream(port: int, message: str) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/stream",
        body=json.dumps({"message": message}),
        headers={"Content-Type": "application/json"},
    )
    return conn, conn.getresponse()


def test_stream_relays_the_whole_answer(
    webapp: tuple[Gunicorn, int], quiet_upstream: MockLLMServer
) -> None:
    """The streaming route relays every upstream delta as its own event, then a done event."""
    server, _ = webapp
    call = new_call("stream")
    conn, response = open_stream(server.port, call.message)
    try:
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events = list(sse_events(response))
    finally:
        conn.close()
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert "".join(deltas) == call.message
    assert len(deltas) == len(call.message.split())  # the mock sends one word per chunk
    assert events[-1] == ("done", {"finish_reason": "stop"})


def test_stream_relays_chunks_while_the_upstream_holds_back_the_rest(
    webapp: tuple[Gunicorn, int], quiet_upstream: MockLLMServer
) -> None:
    """The first two deltas reach the browser while the upstream stalls after them (holding
    back the last word), so nothing waits for the upstream stream to end; when the read
    timeout ends the stall, the browser gets an error event, never the withheld word."""
    server, _ = webapp
    quiet_upstream.inject(Fault.stall(after_chunks=2))
    call = new_call("stream")  # three words: "stream", " tok-...", " please"
    conn, response = open_stream(server.port, call.message)
    try:
        assert response.status == 200
        events = sse_events(response)
        first = [next(events), next(events)]
        assert first == [("delta", {"text": "stream"}), ("delta", {"text": f" {call.token}"})]
        # Received while the upstream is stalled: it has sent these two and nothing since.
        (record,) = attempts_by_token(quiet_upstream)[call.token]
        assert record.fault is not None and record.fault.kind is FaultKind.STALL
        rest = list(events)
    finally:
        conn.close()
    assert [kind for kind, _ in rest] == ["error"], rest
    assert rest[0][1]["error"] == "ReadTimeout"


@pytest.fixture(scope="module")
def churning_webapp(
    upstream: MockLLMServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """gunicorn with the example app, each worker recycled after 100 to 110 requests."""
    server = Gunicorn(upstream, tmp_path_factory.mktemp("churn"), WEBAPP_MAX_REQUESTS="100")
    try:
        with no_faults(upstream):
            server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Kill:
    """A worker SIGKILLed under load, and the front connections it held when it died."""

    pid: int = 0
    front_ports: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)


def front_ports_of(server: Gunicorn, pid: int) -> set[int]:
    """The client-side ports of the front connections worker *pid* has accepted."""
    worker = psutil.Process(pid)
    connections = getattr(worker, "net_connections", worker.connections)(kind="tcp")
    return {c.raddr.port for c in connections if c.raddr and c.laddr.port == server.port}


def wait_for_status(pid: int, wanted: Callable[[str], bool]) -> None:
    for _ in range(BOOT_POLLS):
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            status = psutil.STATUS_DEAD
        if wanted(status):
            return
        time.sleep(POLL / 10)
    raise AssertionError(f"worker {pid} never reached the wanted status")


def kill_a_worker(server: Gunicorn, kill: Kill) -> None:
    """SIGSTOP a worker that holds front connections, note their client ports, SIGKILL it.

    Stopped, it accepts nothing more, so the noted connections are exactly
    the ones whose calls may die with it. (A worker with none, e.g. one that
    max_requests is retiring, is resumed and another one is tried.)
    """
    gone = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    for _ in range(100):
        for pid in server.workers():
            try:
                os.kill(pid, signal.SIGSTOP)
                wait_for_status(pid, lambda s: s == psutil.STATUS_STOPPED or s in gone)
                ports = front_ports_of(server, pid)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue  # it was recycled meanwhile
            if ports:
                kill.pid, kill.front_ports = pid, ports
                os.kill(pid, signal.SIGKILL)
                wait_for_status(pid, lambda s: s in gone)
                kill.done.set()
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        time.sleep(POLL)


def test_killed_and_recycled_workers_lose_no_call_that_reached_a_live_worker(
    churning_webapp: Gunicorn, upstream: MockLLMServer
) -> None:
    """Under load, with every worker recycled by max_requests and one worker SIGKILLed, every
    call that reached a live worker is answered with its own answer.

    Precisely: a call reached the killed worker when it was sent on a front connection that
    worker had accepted (read from /proc while the worker was stopped, just before the
    SIGKILL); such a call may fail at the front, at most one per such connection (each
    carries one call at a time). Every other call, including calls on connections of
    workers that max_requests recycles gracefully, must be answered, and correctly (see
    check_answer). /metrics then counts every answered call, plus at most the killed
    worker's calls that had finished upstream.
    """
    server = churning_webapp
    before = chat_counters(server.port)
    kill = Kill()
    killer = threading.Thread(target=kill_a_worker, args=(server, kill))

    def on_answer(answered: int) -> None:
        if answered == 400:
            killer.start()

    calls = drive(server.port, 1_200, on_answer=on_answer)
    killer.join()
    assert kill.done.is_set() and kill.front_ports

    attempts = attempts_by_token(upstream)
    at_killed = [call for call in calls if call.port in kill.front_ports]
    elsewhere = [call for call in calls if call.port not in kill.front_ports]
    lost = [call for call in elsewhere if call.status is None]
    assert not lost, f"{len(lost)} calls lost at live workers, e.g. {lost[0]}\n{server.tail()}"
    failed_at_killed = [call for call in at_killed if call.status is None]
    assert len(failed_at_killed) <= len(kill.front_ports)
    answered = [call for call in calls if call.status is not None]
    wrong = [why for call in answered if (why := check_answer(call, attempts[call.token]))]
    assert not wrong, f"{len(wrong)} wrong answers: {wrong[:5]}"

    log = server.log.read_text(errors="replace")
    assert log.count("Autorestarting worker after current request.") >= 2  # it did recycle
    after = chat_counters(server.port)
    counted = after["ok"] + after["error"] - before["ok"] - before["error"]
    reached_upstream = [call for call in failed_at_killed if attempts[call.token]]
    assert len(answered) <= counted <= len(answered) + len(reached_upstream)
