"""``llmpool mock-server``: run :class:`~llmpool.testing.MockLLMServer` until stopped.

Part of the ``llmpool`` command (:mod:`llmpool.cli`). Like the other
subcommands, it imports the mock server only when it runs, so
``import llmpool.cli`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

__all__ = ["add_mock_server", "mock_server_options"]


def _faults_arg(text: str) -> Any:
    """argparse type: ``SPEC[;SPEC...]`` -> a tuple of faults."""
    from llmpool.exceptions import ConfigError
    from llmpool.testing.faults import parse_faults

    try:
        return parse_faults(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_mock_server(subparsers: Any) -> None:
    """Declare ``llmpool mock-server`` and its options on *subparsers*."""
    parser = subparsers.add_parser(
        "mock-server",
        help="run the OpenAI/Anthropic-compatible mock server with fault injection",
        description=(
            "Run llmpool's mock LLM server until Ctrl-C or SIGTERM. The first line on "
            "stdout is the base URL (http://HOST:PORT/v1). Fault specs: status=CODE"
            "[,retry_after=S][,retry_after_ms=MS][,http_date], delay=S, reset, drop, "
            "close_after_headers, close_after_response, disconnect=N, truncate=N, "
            "malformed=N, stall=N, stream_error=N, oversized=BYTES; any of them "
            "[,delay=S]; several joined by ';'."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    add("--reply", default=None, metavar="TEXT", help="the reply text of every completion")
    add("--echo", action="store_true", help="reply with the last user message")
    add("--stream-chunks", type=int, metavar="N", help="split streamed replies in N chunks")
    add("--latency-ms", type=float, default=0.0, metavar="MS", help="wait before each response")
    add("--chunk-latency-ms", type=float, default=0.0, metavar="MS", help="wait before each chunk")
    add("--embedding-dim", type=int, default=8, metavar="D", help="embedding vector length")
    add("--model", action="append", metavar="NAME", help="a model GET /v1/models lists (repeat)")
    add("--tool-call", metavar="NAME", help="call this tool when a request offers tools")
    add("--tool-arguments", default="{}", metavar="JSON", help="the tool call's arguments")
    add("--fault-rate", type=float, default=0.0, metavar="R", help="random fault rate, 0..1")
    add(
        "--faults",
        type=_faults_arg,
        metavar="SPEC[;SPEC...]",
        help="the faults random injection chooses from (with --fault-rate)",
    )
    add(
        "--inject",
        type=_faults_arg,
        metavar="SPEC[;SPEC...]",
        help="scripted faults for the first requests, in order",
    )
    add("--seed", type=int, help="seed of the random faults (reproducible runs)")
    add("--close-after-requests", type=int, metavar="N", help="close connections after N requests")
    add(
        "--drop-after-requests",
        type=int,
        metavar="N",
        help="drop the request after the Nth on each connection, unanswered",
    )
    add("--idle-timeout", type=float, metavar="S", help="close connections idle S seconds")
    add("-v", "--verbose", action="store_true", help="log every request to stderr")
    parser.set_defaults(runner=_run_mock_server)


def mock_server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The MockLLMServer keyword arguments that the parsed *args* ask for."""
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "echo": args.echo,
        "stream_chunks": args.stream_chunks,
        "latency": args.latency_ms / 1000.0,
        "chunk_latency": args.chunk_latency_ms / 1000.0,
        "embedding_dim": args.embedding_dim,
        "tool_call": args.tool_call,
        "tool_arguments": args.tool_arguments,
        "fault_rate": args.fault_rate,
        "seed": args.seed,
        "close_after_requests": args.close_after_requests,
        "drop_after_requests": args.drop_after_requests,
        "idle_timeout": args.idle_timeout,
    }
    if args.reply is not None:
        options["reply"] = args.reply
    if args.model:
        options["models"] = tuple(args.model)
    if args.faults:
        options["random_faults"] = args.faults
    return options


def _run_mock_server(args: argparse.Namespace) -> int:
    import logging
    import signal

    from llmpool.exceptions import ConfigError
    from llmpool.testing import MockLLMServer

    if args.faults and not args.fault_rate:
        print("llmpool mock-server: --faults needs --fault-rate (or use --inject)", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(message)s")
    try:
        server = MockLLMServer(**mock_server_options(args))
    except ConfigError as exc:
        print(f"llmpool mock-server: {exc}", file=sys.stderr)
        return 2
    if args.inject:
        for fault in args.inject:
            server.inject(fault)
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    # Stop on Ctrl-C even when started with SIGINT ignored (nohup, a background job).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    try:
        server.start()
    except OSError as exc:
        print(f"llmpool mock-server: cannot listen: {exc}", file=sys.stderr)
        return 1
    try:
        print(server.base_url, flush=True)
        print("llmpool mock server running; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    print(
        f"served {server.request_count} requests on {server.connections_opened} connections",
        file=sys.stderr,
    )
    return 0
