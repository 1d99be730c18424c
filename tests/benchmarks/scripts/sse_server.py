"""A tiny loopback server that streams a very long OpenAI chat completion.

The mock server builds each reply in memory; this one does not: it repeats one
pre-built block of ``data: {chunk}`` events, HTTP-chunked, until it has sent
``--mib`` MiB, then a finishing chunk and ``data: [DONE]``. Its own memory is
constant, so a client's memory can be measured while it consumes an answer far
larger than anything it should hold.

    python sse_server.py --mib 100 --delta-bytes 1000 [--padding]

prints its base URL (``http://127.0.0.1:PORT/v1``) on the first line, serves
``POST /v1/chat/completions`` on any number of connections (one thread each)
until its standard input closes or it is terminated. With ``--padding`` each
event's text is one character and the bulk of the event is a ``padding`` field
that clients ignore: the same bytes on the wire, almost no text.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading

EVENTS_PER_HTTP_CHUNK = 16
MIB = 1 << 20


def event(delta: dict[str, str], finish: str | None = None, padding: str = "") -> bytes:
    """One ``data:`` event of an OpenAI chat completion stream."""
    chunk: dict[str, object] = {
        "id": "chatcmpl-sse",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "mock-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if padding:
        chunk["padding"] = padding
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Body:
    """The bytes of one response, built once, shared by every connection."""

    def __init__(self, mib: float, delta_bytes: int, padding: bool) -> None:
        if padding:
            one = event({"content": "x"}, padding="p" * delta_bytes)
        else:
            one = event({"content": "x" * delta_bytes})
        self.block = http_chunk(one * EVENTS_PER_HTTP_CHUNK)
        self.repeats = max(1, round(mib * MIB / (len(one) * EVENTS_PER_HTTP_CHUNK)))
        self.head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        ) + http_chunk(event({"role": "assistant", "content": ""}))
        ending = event({}, finish="stop") + b"data: [DONE]\n\n"
        self.tail = http_chunk(ending) + b"0\r\n\r\n"

    @property
    def size(self) -> int:
        """Bytes of the body after the headers (HTTP chunk framing included)."""
        return len(self.head) + len(self.block) * self.repeats + len(self.tail)


def read_request(rfile: object) -> bool:
    """Read one request's head and body; False at the end of the connection."""
    length = 0
    first = rfile.readline()  # type: ignore[attr-defined]
    if not first:
        return False
    while True:
        line = rfile.readline()  # type: ignore[attr-defined]
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    rfile.read(length)  # type: ignore[attr-defined]
    return True


def serve_connection(sock: socket.socket, body: Body) -> None:
    with sock, sock.makefile("rb") as rfile:
        try:
            while read_request(rfile):
                sock.sendall(body.head)
                for _ in range(body.repeats):
                    sock.sendall(body.block)
                sock.sendall(body.tail)
        except OSError:
            pass


def accept_loop(listener: socket.socket, body: Body) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve_connection, args=(sock, body), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=100.0, help="MiB of events per response")
    parser.add_argument("--delta-bytes", type=int, default=1000, help="text bytes per event")
    parser.add_argument("--padding", action="store_true", help="pad events instead of text")
    args = parser.parse_args(argv)
    body = Body(args.mib, args.delta_bytes, args.padding)
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=accept_loop, args=(listener, body), daemon=True).start()
    print(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", flush=True)
    print(json.dumps({"body_bytes": body.size}), flush=True)
    sys.stdin.read()  # until the parent closes our standard input
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
