"""A fast loopback server with canned OpenAI chat answers, for benchmarks that must
measure the client and not the server.

Every ``POST /v1/chat/completions`` gets the same pre-built bytes: a 700-byte
``chat.completion`` (``Content-Length``), or, when the request body contains
``"stream":true``, a chunked SSE answer of 42 ``data:`` events (a role event,
39 content events, a finish event and a usage event, one HTTP chunk each) and
``data: [DONE]``. Any other request gets an empty 404. Request parsing is the
least that keeps a keep-alive connection in step: find the end of the head,
read ``Content-Length``, skip the body.

    python canned_server.py [--port 0] [--mode epoll|threads]

``epoll`` (the default) serves every connection from one thread with a
selector; ``threads`` serves each connection from its own thread with blocking
sockets. The server prints its base URL (``http://127.0.0.1:PORT/v1``) on the
first line and serves until it is terminated or its standard input closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import threading

CREATED = 1_700_000_000
MODEL = "canned-model"
#: The 39 pieces of text the stream carries; the JSON answer's content is their join.
PIECES = [f"tok{i:02d} " for i in range(39)]
TEXT = "".join(PIECES)
REQUEST_ID = "req_canned_0123456789abcdef"
CHAT_LINE = b"POST /v1/chat/completions "


def chat_completion() -> bytes:
    """The canned non-streamed answer's body (about 700 bytes)."""
    body = {
        "id": "chatcmpl-canned000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": len(PIECES),
            "total_tokens": 9 + len(PIECES),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_canned00",
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _chunk(choices: list[dict[str, object]], usage: dict[str, int] | None = None) -> bytes:
    data = {
        "id": "chatcmpl-canned000000000000000000000",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_canned00",
        "choices": choices,
        "usage": usage,
    }
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def sse_events() -> list[bytes]:
    """The 42 ``data:`` events of the canned stream, then ``data: [DONE]``."""

    def choice(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [_chunk([choice({"role": "assistant", "content": ""})])]
    events += [_chunk([choice({"content": piece})]) for piece in PIECES]
    events.append(_chunk([choice({}, "stop")]))
    usage = {"prompt_tokens": 9, "completion_tokens": len(PIECES), "total_tokens": 9 + len(PIECES)}
    events.append(_chunk([], usage))
    return [*events, b"data: [DONE]\n\n"]


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def build_answers() -> tuple[bytes, bytes, bytes]:
    """The complete JSON answer, stream answer and 404, head included."""
    body = chat_completion()
    json_answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"x-request-id: %s\r\ncontent-length: %d\r\n\r\n%s" % (REQUEST_ID.encode(), len(body), body)
    )
    stream_answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"x-request-id: %s\r\ntransfer-encoding: chunked\r\n\r\n"
        % REQUEST_ID.encode()
        + b"".join(_http_chunk(event) for event in sse_events())
        + b"0\r\n\r\n"
    )
    not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    return json_answer, stream_answer, not_found


JSON_ANSWER, STREAM_ANSWER, NOT_FOUND = build_answers()


def take_request(buffer: bytearray) -> bytes | None:
    """Remove one complete request from *buffer* and return its answer, or None
    if the request is not complete yet."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    length = 0
    at = head.find(b"\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r", at + 1)
        length = int(head[at + 16 : line_end if line_end > 0 else None])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    body = bytes(buffer[end + 4 : total])
    del buffer[:total]
    if not head.startswith(CHAT_LINE.lower()):
        return NOT_FOUND
    if b'"stream":true' in body or b'"stream": true' in body:
        return STREAM_ANSWER
    return JSON_ANSWER


def serve_epoll(listener: socket.socket) -> None:
    """Serve every connection from this thread, driven by epoll (level-triggered)."""
    poller = select.epoll()
    listener.setblocking(False)
    poller.register(listener.fileno(), select.EPOLLIN)
    listening = listener.fileno()
    connections: dict[int, tuple[socket.socket, bytearray]] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listening:
                _accept(listener, poller, connections)
                continue
            sock, buffer = connections[fd]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                del connections[fd]
                sock.close()
                continue
            buffer += data
            out = b""
            while (answer := take_request(buffer)) is not None:
                out += answer
            if out:
                _send(sock, out)


def _accept(
    listener: socket.socket,
    poller: select.epoll,
    connections: dict[int, tuple[socket.socket, bytearray]],
) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connections[conn.fileno()] = (conn, bytearray())
        poller.register(conn.fileno(), select.EPOLLIN)


def _send(sock: socket.socket, out: bytes) -> None:
    """Send *out*; if the socket buffer is full (a 12 KiB answer rarely fills it),
    finish with a blocking ``sendall``: benchmark clients always read their answer."""
    try:
        sent = sock.send(out)
    except BlockingIOError:
        sent = 0
    except OSError:
        return
    if sent < len(out):
        sock.setblocking(True)
        with contextlib.suppress(OSError):
            sock.sendall(out[sent:])
        sock.setblocking(False)


def serve_threads(listener: socket.socket) -> None:
    """Serve each connection from its own thread, with blocking sockets."""
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_connection, args=(conn,), daemon=True).start()


def _serve_connection(conn: socket.socket) -> None:
    buffer = bytearray()
    with conn:
        try:
            while data := conn.recv(65536):
                buffer += data
                while (answer := take_request(buffer)) is not None:
                    conn.sendall(answer)
        except OSError:
            pass


def _exit_when_stdin_closes() -> None:
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--mode", choices=["epoll", "threads"], default="epoll")
    args = parser.parse_args(argv)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=128)
    print(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", flush=True)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    if args.mode == "epoll":
        serve_epoll(listener)
    else:
        serve_threads(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
