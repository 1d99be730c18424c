"""Turn an answer and a fault into the steps a connection performs on its socket.

A plan is a list of :data:`Step` values: send bytes, pause, stall, close. The
connection thread executes it; everything here is pure and testable without
a socket. Faults act on the normal answer that :func:`~llmpool.testing.routes.route`
builds, so every fault works on every endpoint and both API shapes.
"""

from __future__ import annotations

import json
import time

import attrs

from llmpool.testing.bodies import JsonResponse, SseEvent, StreamBody, StreamResponse, new_id
from llmpool.testing.faults import Fault, FaultKind
from llmpool.testing.http11 import CHUNKED_END, HttpRequest, chunk, http_date, response_head
from llmpool.testing.routes import Response, error_response, route, shape_for
from llmpool.testing.settings import MockSettings

__all__ = ["Close", "Pause", "Send", "Stall", "Step", "plan"]


@attrs.frozen
class Send:
    """Write these bytes."""

    data: bytes


@attrs.frozen
class Pause:
    """Wait this many seconds (cut short when the server stops)."""

    seconds: float


@attrs.frozen
class Stall:
    """Go silent until the client closes the connection or the server stops."""


@attrs.frozen
class Close:
    """Close the connection: a FIN, or an RST when ``reset``."""

    reset: bool = False


Step = Send | Pause | Stall | Close


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def _retry_headers(fault: Fault) -> list[tuple[str, str]]:
    headers = []
    if fault.retry_after is not None:
        value = (
            http_date(time.time() + fault.retry_after)
            if fault.http_date
            else _fmt_seconds(fault.retry_after)
        )
        headers.append(("retry-after", value))
    if fault.retry_after_ms is not None:
        headers.append(("retry-after-ms", str(fault.retry_after_ms)))
    return headers


class _Planner:
    """Builds one request's plan; confined to the connection thread."""

    def __init__(self, request: HttpRequest, settings: MockSettings, keep_alive: bool) -> None:
        self.request = request
        self.settings = settings
        self.keep_alive = keep_alive

    # ------------------------------------------------------------------ heads

    def _head(self, status: int, shape_header: str, headers: list[tuple[str, str]]) -> bytes:
        headers = [*headers, (shape_header, new_id("req_"))]
        if not self.keep_alive:
            headers.append(("connection", "close"))
        return response_head(status, headers)

    def json_parts(self, response: JsonResponse, body: bytes) -> tuple[bytes, bytes]:
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            *response.headers,
        ]
        return self._head(response.status, response.shape.request_id_header, headers), body

    def stream_head(self, response: StreamResponse) -> bytes:
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ]
        if self.request.chunked_ok:
            headers.append(("transfer-encoding", "chunked"))
        else:
            self.keep_alive = False
        return self._head(200, response.shape.request_id_header, headers)

    # ------------------------------------------------------------------ bodies

    def json_steps(self, response: JsonResponse, fault: Fault | None) -> list[Step]:
        kind = fault.kind if fault else None
        if fault and kind is FaultKind.OVERSIZED:
            response.body["padding"] = "x" * fault.size
        elif kind is FaultKind.TRUNCATE:
            response.shape.clear_finish(response.body)
        elif fault and kind is FaultKind.STREAM_ERROR:
            response.body = response.shape.error_event(fault.message).data
        body = json.dumps(response.body).encode()
        half = body[: len(body) // 2]
        if kind is FaultKind.MALFORMED:
            body = half
        head, body = self.json_parts(response, body)
        if kind is FaultKind.CLOSE_AFTER_HEADERS:
            return [Send(head), Close()]
        if kind is FaultKind.DISCONNECT:
            return [Send(head + half), Close()]
        if kind is FaultKind.STALL:
            return [Send(head + half), Stall(), Close()]
        return [Send(head + body)]

    def stream_steps(self, response: StreamResponse, fault: Fault | None) -> list[Step]:
        head = self.stream_head(response)
        if fault and fault.kind is FaultKind.CLOSE_AFTER_HEADERS:
            return [Send(head), Close()]
        events, ends = _cut_stream(response, fault)
        frame = chunk if self.request.chunked_ok else bytes
        end = CHUNKED_END if ends and self.request.chunked_ok else b""
        latency = self.settings.chunk_latency
        if not latency:
            steps: list[Step] = [Send(head + b"".join(frame(e) for e in events) + end)]
        else:
            steps = [Send(head)]
            for event in events:
                steps += [Pause(latency), Send(frame(event))]
            if end:
                steps.append(Send(end))
        if fault and fault.kind is FaultKind.STALL:
            steps += [Stall(), Close()]
        elif not ends:
            steps.append(Close())
        return steps


def _malformed(event: SseEvent) -> bytes:
    """*event* with its JSON cut in half: a data line that does not parse."""
    payload = event.data if isinstance(event.data, str) else json.dumps(event.data)
    cut = payload[: max(1, len(payload) // 2)]
    prefix = f"event: {event.event}\n" if event.event else ""
    return f"{prefix}data: {cut}\n\n".encode()


def _cut_stream(response: StreamResponse, fault: Fault | None) -> tuple[list[bytes], bool]:
    """The encoded events to send and whether the stream ends with its terminator."""
    body: StreamBody = response.body
    kind = fault.kind if fault else None
    if fault and kind is FaultKind.OVERSIZED:
        first = (body.preamble or body.deltas or body.ending)[0]
        first.data["padding"] = "x" * fault.size
    encode = SseEvent.encode
    if fault is None or kind not in (
        FaultKind.DISCONNECT,
        FaultKind.TRUNCATE,
        FaultKind.MALFORMED,
        FaultKind.STALL,
        FaultKind.STREAM_ERROR,
    ):
        return [encode(e) for e in (*body.preamble, *body.deltas, *body.ending)], True
    n = min(fault.after_chunks, len(body.deltas))
    sent = [encode(e) for e in (*body.preamble, *body.deltas[:n])]
    if kind is FaultKind.MALFORMED:
        rest = [*body.deltas[n:], *body.ending]
        return [*sent, _malformed(rest[0]), *map(encode, rest)], True
    if kind is FaultKind.STREAM_ERROR:
        return [*sent, encode(response.shape.error_event(fault.message))], True
    return sent, kind is FaultKind.TRUNCATE


def _status_response(request: HttpRequest, fault: Fault) -> JsonResponse:
    assert fault.status_code is not None
    response = error_response(shape_for(request.path), fault.status_code, fault.message)
    response.headers.extend(_retry_headers(fault))
    return response


def plan(
    request: HttpRequest, settings: MockSettings, fault: Fault | None, *, keep_alive: bool
) -> list[Step]:
    """The steps that answer *request* under *settings*, misbehaving as *fault* says.

    ``keep_alive`` False adds ``Connection: close`` and a closing step.
    """
    steps: list[Step] = []
    if settings.latency:
        steps.append(Pause(settings.latency))
    if fault and fault.delay_seconds:
        steps.append(Pause(fault.delay_seconds))
    kind = fault.kind if fault else None
    if kind is FaultKind.RESET or kind is FaultKind.DROP:
        return [*steps, Close(reset=kind is FaultKind.RESET)]
    planner = _Planner(request, settings, keep_alive)
    response: Response = (
        _status_response(request, fault)
        if fault and kind is FaultKind.STATUS
        else route(request, settings)
    )
    if isinstance(response, JsonResponse):
        steps += planner.json_steps(response, fault)
    else:
        steps += planner.stream_steps(response, fault)
    closes = isinstance(steps[-1], Close)
    if not closes and (kind is FaultKind.CLOSE_AFTER_RESPONSE or not planner.keep_alive):
        steps.append(Close())
    return steps
