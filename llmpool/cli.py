"""The ``llmpool`` command.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares
its options and ``_run_<name>(args) -> int`` runs it. Imports beyond the
standard library happen inside the ``_run_`` functions (and argument
converters), so ``import llmpool.cli`` stays cheap.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from llmpool.cli_mock_server import add_mock_server

__all__ = ["build_parser", "main"]

Runner = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmpool`` command with *argv* (default: ``sys.argv[1:]``); return the exit code."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="llmpool: %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    runner: Runner | None = getattr(args, "runner", None)
    if runner is None:
        parser.print_help(sys.stderr)
        return 2
    return runner(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="llmpool", description="llmpool: a thread-safe client for LLM HTTP APIs."
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(subparsers)
    _add_chat(subparsers)
    _add_plugins(subparsers)
    _add_check_config(subparsers)
    add_mock_server(subparsers)
    return parser


def _fail(command: str, error: BaseException | str, code: int = 1) -> int:
    print(f"llmpool {command}: {_scrub(str(error))}", file=sys.stderr)
    return code


def _scrub(text: str) -> str:
    """*text* with every URL in it shown without user, password or credential
    parameters (an error may quote the URL it failed on)."""
    import re

    from llmpool.redaction import redact_url

    return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+", lambda m: redact_url(m[0]), text)


# --------------------------------------------------------------------------- demo


def _add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run many calls from many threads through one client and report (no API key)",
        description=(
            "Start the embedded mock LLM server (realistic latency, a few faults), run "
            "N calls from T threads through one llmpool Client, report calls, errors, "
            "retries, connection reuse, latency, throughput, memory and plugin stats, "
            "then run the same workload with a new connection per call and show what "
            "pooling bought. --base-url points it at a real server instead; --endpoints N "
            "runs over a group of N embedded servers, the first --fail K of them refusing "
            "connections, and adds the per-endpoint table (failover, cool-downs, probes)."
        ),
    )
    add = parser.add_argument
    add("--calls", type=_positive_int, default=2000, metavar="N", help="calls (default 2000)")
    add("--threads", type=_positive_int, default=16, metavar="T", help="threads (default 16)")
    add("--latency-ms", type=float, default=20.0, metavar="MS", help="server latency (20)")
    add("--fault-rate", type=float, default=0.02, metavar="R", help="injected faults (0.02)")
    add("--stream-ratio", type=float, default=0.25, metavar="R", help="share streamed (0.25)")
    add("--tls", action="store_true", help="serve over HTTPS with a throwaway local CA")
    add("--no-baseline", action="store_true", help="skip the run without pooling")
    add("--seed", type=int, default=1, help="seed of the injected faults")
    add("--base-url", help="call this server instead of the embedded one")
    add("--api-key", help="API key for --base-url (default: $OPENAI_API_KEY etc.)")
    add("--provider", default="openai", help="provider for --base-url (openai, anthropic)")
    add("--model", default="mock-model", help="model name to ask for")
    add("--plugins", default="usage", metavar="A,B", help="plugins to load (default usage)")
    add("--endpoints", type=_positive_int, default=0, metavar="N", help="a group of N servers")
    add("--fail", type=int, default=0, metavar="K", help="of which K refuse connections (0)")
    add("--json", action="store_true", help="print the report as JSON")
    add("--html", metavar="PATH", help="also write the report as one self-contained HTML page")
    parser.set_defaults(runner=_run_demo)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_demo(args: argparse.Namespace) -> int:
    import json
    import os

    from llmpool.demo import DemoOptions, render, run_demo
    from llmpool.exceptions import LLMPoolError

    api_key = args.api_key
    if args.base_url and api_key is None:
        api_key = os.environ.get(
            "ANTHROPIC_API_KEY" if args.provider == "anthropic" else "OPENAI_API_KEY"
        )
    options = DemoOptions(
        calls=args.calls,
        threads=args.threads,
        latency_ms=args.latency_ms,
        fault_rate=args.fault_rate,
        stream_ratio=args.stream_ratio,
        tls=args.tls,
        baseline=not args.no_baseline,
        seed=args.seed,
        model=args.model,
        base_url=args.base_url,
        api_key=api_key,
        provider=args.provider,
        plugins=tuple(p.strip() for p in args.plugins.split(",") if p.strip()),
        detail=bool(args.html),
        endpoints=args.endpoints,
        fail=args.fail,
    )
    total = options.calls * (2 if options.baseline else 1)
    with _progress_bar(total, enabled=not args.json) as progress:
        try:
            report = run_demo(options, progress=progress)
        except LLMPoolError as exc:
            return _fail("demo", exc)
    if args.html:
        from llmpool.demo_html import write_html

        try:
            write_html(report, args.html)
        except OSError as exc:
            return _fail("demo", f"cannot write {args.html}: {exc}")
        for key in ("pooled", "unpooled"):
            report.get(key, {}).pop("detail", None)  # per-call rows: for the page only
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    if args.html and not args.json:
        print(f"HTML report: {args.html}")
    return 0


class _TextBar:
    """A minimal progress line on stderr when tqdm is not installed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()  # guards done

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
        if done % max(1, self.total // 50) == 0 or done == self.total:
            filled = round(30 * done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            if done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


class _progress_bar:
    """A progress callback: tqdm when installed, else a text line; nothing when disabled."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return _TextBar(self.total)
        self._bar = tqdm(total=self.total, unit="call", leave=False)
        return self._bar.update  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------- chat


def _add_chat(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="send one prompt with the effective configuration",
        description=(
            "Send one chat call using the configuration from --config (or $LLMPOOL_CONFIG), "
            "the LLMPOOL_* environment and these flags, and print the reply."
        ),
    )
    add = parser.add_argument
    add("prompt", help="the user message")
    add("--stream", action="store_true", help="print the reply as it streams")
    add("--config", metavar="FILE", help="a YAML configuration file")
    add("--base-url", help="the API root, e.g. https://api.openai.com/v1")
    add("--api-key", help="the API key (default: from the configuration or environment)")
    add("--provider", help="openai or anthropic")
    add("--model", help="the model (default: $LLMPOOL_MODEL)")
    add("--system", help="a system prompt")
    parser.set_defaults(runner=_run_chat)


def _run_chat(args: argparse.Namespace) -> int:
    import os

    from llmpool.client import Client
    from llmpool.config_loading import load_config
    from llmpool.exceptions import LLMPoolError

    overrides = {
        f"client.{key}": value
        for key, value in (
            ("base_url", args.base_url),
            ("api_key", args.api_key),
            ("provider", args.provider),
        )
        if value is not None
    }
    model = args.model or os.environ.get("LLMPOOL_MODEL")
    if not model:
        return _fail("chat", "no model: pass --model or set LLMPOOL_MODEL", 2)
    messages = [{"role": "user", "content": args.prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    try:
        config = load_config(args.config, overrides=overrides)
        with Client.from_config(config) as client:
            if not args.stream:
                print(client.chat(model, messages).text)
                return 0
            with client.chat(model, messages, stream=True) as stream:
                for chunk in stream:
                    print(chunk.delta, end="", flush=True)
            print()
    except LLMPoolError as exc:
        return _fail("chat", exc)
    return 0


# --------------------------------------------------------------------------- plugins


def _add_plugins(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list installed providers and plugins, with versions and load failures",
        description=(
            "List the entry points in the llmpool.providers and llmpool.plugins groups: "
            "name, distribution and version, module, and whether it loads (and why not)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-load", action="store_true", help="do not import them")
    parser.set_defaults(runner=_run_plugins)


def _run_plugins(args: argparse.Namespace) -> int:
    import json

    from llmpool.plugins import describe_installed

    rows = describe_installed(load=not args.no_load)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    failed = 0
    for namespace in ("llmpool.providers", "llmpool.plugins"):
        print(f"{namespace}:")
        for row in (r for r in rows if r["namespace"] == namespace):
            dist = f"{row['distribution']} {row['version']}" if row["distribution"] else "?"
            state = ""
            if "error" in row:
                state = "ok" if row["error"] is None else f"FAILED: {row['error']}"
                failed += row["error"] is not None
            print(f"  {row['name']:<12} {dist:<22} {row['value']:<50} {state}".rstrip())
    return 1 if failed else 0


# --------------------------------------------------------------------------- check-config


def _add_check_config(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a configuration file and print the effective configuration",
        description=(
            "Validate FILE (with the LLMPOOL_* environment applied) and print the "
            "effective configuration with secrets masked. Exits 1 on any error."
        ),
    )
    parser.add_argument("file", help="the YAML configuration file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    parser.set_defaults(runner=_run_check_config)


def _run_check_config(args: argparse.Namespace) -> int:
    import json

    from llmpool.config_loading import load_config
    from llmpool.exceptions import LLMPoolError

    try:
        config = load_config(args.file)
        secret_headers = _build_client_once(config)
    except LLMPoolError as exc:
        return _fail("check-config", exc)
    data = config.to_dict(secret_headers=secret_headers)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        print(f"# {args.file}: valid; effective configuration (secrets masked)")
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip())
    return 0


def _build_client_once(config: Any) -> tuple[str, ...]:
    """Build (and close) the client ``Client.from_config`` would build, so
    check-config refuses whatever it refuses; return the header names the
    provider declares secret. Without a base URL the client takes the
    provider's (its environment variable, then its default)."""
    from llmpool.client import Client
    from llmpool.redaction import redact_url

    with Client.from_config(config) as client:  # plugins.strict included
        declared = client.provider.secret_headers
        if not config.client.base_url:
            print(
                "llmpool check-config: note: client.base_url is not set; calls go to "
                f"{redact_url(client.base_url)} (the provider's environment variable or default)",
                file=sys.stderr,
            )
    return tuple(declared)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
