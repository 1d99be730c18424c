"""A Flask app that calls an LLM through one module-level llmpool client.

Run it under gunicorn with the configuration next to this file (see README.md)::

    cd examples/webapp && gunicorn -c gunicorn.conf.py app:app

Routes:

``GET /``
    A page with a form that streams the answer.
``POST /chat``
    ``{"message": "..."}`` -> ``{"reply": "...", "model", "finish_reason", "request_id"}``.
``POST /stream``
    The same question; the answer comes back as server-sent events, each delta
    relayed to the browser as soon as it arrives from the upstream API.
``GET /metrics``
    Prometheus metrics of every worker (prometheus_client's multiprocess mode).
``GET /healthz``, ``GET /stats``
    Liveness (no upstream call), and this worker's pid and llmpool statistics.

An upstream failure becomes a JSON error with a status the browser can act
on (see :func:`status_for`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request

import llmpool
from llmpool import exceptions as errors

HERE = Path(__file__).resolve().parent
CONFIG = os.environ.get("WEBAPP_CONFIG", str(HERE / "llmpool.yaml"))
MODEL = os.environ.get("WEBAPP_MODEL", "gpt-4o-mini")
MAX_MESSAGE_CHARS = 8_000

# One client per process, shared by every thread of the worker. Under
# `gunicorn --preload` this line runs once, in the master; each forked worker
# inherits the client, and llmpool resets it in the child (fresh locks, the
# master's sockets dropped, its own memory-sampler thread): see docs/webapps.rst.
client = llmpool.Client.from_config(CONFIG)

if os.environ.get("WEBAPP_WARMUP", "1") != "0":
    # Fail at boot, not at the first user's request, when the URL or the key is
    # wrong. The connection it opens is not shared with the workers.
    client.models()

app = Flask(__name__)


# --------------------------------------------------------------------------- errors


#: Errors that mean time ran out (504).
OUT_OF_TIME = (
    errors.DeadlineExceeded,
    errors.ReadTimeout,
    errors.ConnectTimeout,
    errors.PoolTimeout,
)


class BadInput(Exception):
    """The browser sent something this app does not accept (a 400)."""


def status_for(err: errors.LLMPoolError) -> int:
    """The HTTP status this app answers when the upstream call failed with *err*.

    429 when the upstream rate limit outlasted the retries (the browser may
    come back later), 400 when the upstream refused the input itself (400,
    422: e.g. a message too long for the model), 504 when time ran out, 503
    when this worker sheds load under memory pressure, and 502 for everything
    else (the upstream failed, or refused our credentials: not the user's fault).
    """
    if isinstance(err, errors.RateLimitError):
        return 429
    if isinstance(err, (errors.BadRequestError, errors.UnprocessableEntityError)):
        return 400
    if isinstance(err, OUT_OF_TIME):
        return 504
    if isinstance(err, errors.MemoryPressureError):
        return 503
    return 502


def error_body(err: errors.LLMPoolError) -> dict[str, Any]:
    """What the browser is told: the error's class and the upstream's status and
    request id, never the upstream's body (it may quote the prompt)."""
    return {
        "error": type(err).__name__,
        "upstream_status": getattr(err, "status_code", None),
        "request_id": getattr(err, "request_id", None),
    }


@app.errorhandler(errors.LLMPoolError)
def upstream_failed(err: errors.LLMPoolError) -> tuple[Response, int, dict[str, str]]:
    retry_after = getattr(err, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else {}
    return jsonify(error_body(err)), status_for(err), headers


@app.errorhandler(BadInput)
def bad_input(err: BadInput) -> tuple[Response, int]:
    return jsonify({"error": "BadInput", "detail": str(err)}), 400


def user_messages() -> list[dict[str, str]]:
    """The chat messages for the request's ``{"message": "..."}``."""
    payload = request.get_json(silent=True)
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, str) or not message.strip():
        raise BadInput('send JSON {"message": "..."}')
    if len(message) > MAX_MESSAGE_CHARS:
        raise BadInput(f"a message is at most {MAX_MESSAGE_CHARS} characters")
    return [{"role": "user", "content": message}]


# --------------------------------------------------------------------------- routes


@app.post("/chat")
def chat() -> Response:
    reply = client.chat(MODEL, user_messages())
    return jsonify(
        reply=reply.text,
        model=reply.model,
        finish_reason=reply.finish_reason,
        request_id=reply.request_id,
    )


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


@app.post("/stream")
def stream() -> Response:
    # Opening the stream here, before the response starts, means a refused
    # call (a 400, a 429, retries exhausted) still gets a real status code.
    upstream = client.chat(MODEL, user_messages(), stream=True)

    def events() -> Iterator[bytes]:
        # Runs in this same gunicorn thread (a Stream is confined to its
        # thread); every yield is written to the socket at once.
        try:
            with upstream:
                for chunk in upstream:
                    if chunk.delta:
                        yield sse("delta", {"text": chunk.delta})
                yield sse("done", {"finish_reason": upstream.finish_reason})
        except errors.LLMPoolError as err:  # the status line is gone: say it in the stream
            yield sse("error", error_body(err))

    response = Response(events(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: relay, do not buffer
    # A browser that leaves before the first chunk: the generator never ran,
    # so close the stream (and give its connection back) when the response closes.
    response.call_on_close(upstream.close)
    return response


@app.get("/metrics")
def metrics() -> Response:
    import prometheus_client
    from prometheus_client import multiprocess

    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # e.g. `flask run`: this process only
        plugin = client.plugins.get("metrics") if client.plugins is not None else None
        registry = plugin.registry if plugin is not None else prometheus_client.REGISTRY
    else:
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(
        prometheus_client.generate_latest(registry), mimetype=prometheus_client.CONTENT_TYPE_LATEST
    )


@app.get("/healthz")
def healthz() -> Response:
    return jsonify(ok=True, pid=os.getpid())


@app.get("/stats")
def stats() -> Response:
    """This worker's view: which process answered, and its pool and memory figures."""
    figures = client.stats()
    return jsonify(
        pid=os.getpid(),
        threads=sorted(thread.name for thread in threading.enumerate()),
        pool=figures["pool"],
        memory=figures["memory"],
        client=figures["client"],
    )


@app.get("/")
def index() -> Response:
    return Response((HERE / "index.html").read_text(encoding="utf-8"), mimetype="text/html")
