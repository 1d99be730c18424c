"""``llmpool demo --endpoints N --fail K``: the demo's workload over an endpoint group.

N endpoints on loopback: the first K refuse connections (a port bound to
learn it, then closed), the others are embedded mock servers. The client
routes every call over the group, fails over from the refusing endpoints,
cools them down and probes them once per cool-down; the report carries the
per-endpoint table (state, requests, failures, cool-downs, latency, last
error) as text, JSON and HTML. Used by :mod:`llmpool.demo`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

from llmpool.endpoints.model import Endpoint, HealthConfig
from llmpool.exceptions import ConfigError
from llmpool.redaction import redact_url
from llmpool.retry import RetryPolicy

__all__ = [
    "DEMO_HEALTH",
    "MAX_ENDPOINTS",
    "REFUSING",
    "check_group_options",
    "endpoint_rows",
    "group_client_kwargs",
    "group_head",
    "group_servers",
    "render_endpoints",
    "render_endpoints_html",
]

#: Short cool-downs, so that a demo of a few seconds shows several probes.
DEMO_HEALTH = HealthConfig(cooldown=0.25, max_cooldown=1.0, consecutive_failures=3)
#: The most endpoints a demo starts.
MAX_ENDPOINTS = 16
#: What the report says a failing endpoint does.
REFUSING = "refuses connections"
SERVING = "mock server"


def check_group_options(endpoints: int, fail: int, base_url: str | None) -> None:
    """Refuse a group the demo cannot run (ConfigError naming the flag)."""
    if endpoints == 0:
        if fail:
            raise ConfigError("--fail needs --endpoints", key="fail", value=fail)
        return
    if base_url:
        raise ConfigError(
            "--endpoints starts embedded servers; it does not go with --base-url", key="endpoints"
        )
    if not 1 <= endpoints <= MAX_ENDPOINTS:
        raise ConfigError(
            f"--endpoints must be 1 to {MAX_ENDPOINTS}, got {endpoints}",
            key="endpoints",
            value=endpoints,
        )
    if not 0 <= fail < endpoints:
        raise ConfigError(
            f"--fail must leave at least one working endpoint (0 to {endpoints - 1}), got {fail}",
            key="fail",
            value=fail,
        )


def _refused_port() -> int:
    """A loopback port nothing listens on (bound to learn it, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def group_servers(
    options: Any, ssl_context: ssl.SSLContext | None, faults: str
) -> Iterator[tuple[tuple[Endpoint, ...], dict[str, Any]]]:
    """Start the group's mock servers (sprinkling *faults*); yield its
    endpoints and the report's description of them. The first
    ``options.fail`` endpoints refuse connections."""
    from llmpool.testing import MockLLMServer

    scheme = "https" if ssl_context is not None else "http"
    with contextlib.ExitStack() as stack:
        endpoints: list[Endpoint] = []
        shown: list[dict[str, Any]] = []
        for index in range(options.endpoints):
            name = f"ep{index + 1}"
            if index < options.fail:
                base_url, role = f"{scheme}://127.0.0.1:{_refused_port()}/v1", REFUSING
            else:
                server = MockLLMServer(
                    latency=options.latency_ms / 1000.0,
                    fault_rate=options.fault_rate,
                    random_faults=faults,
                    seed=options.seed + index,
                    max_recorded=100,
                    ssl_context=ssl_context,
                )
                stack.enter_context(server)
                base_url, role = server.base_url, SERVING
            endpoints.append(Endpoint(name=name, base_url=base_url, api_key="demo-key"))
            shown.append({"name": name, "base_url": redact_url(base_url), "role": role})
        live = [e for e in shown if e["role"] == SERVING]
        yield (
            tuple(endpoints),
            {
                "kind": f"group of {options.endpoints} endpoints",
                "base_url": live[0]["base_url"],
                "endpoints": shown,
                "failing": options.fail,
                "latency_ms": options.latency_ms,
                "fault_rate": options.fault_rate,
                "tls": ssl_context is not None,
            },
        )


def group_client_kwargs(endpoints: tuple[Endpoint, ...], fail: int) -> dict[str, Any]:
    """The Client's keyword arguments for the group: enough attempts to get
    past every failing endpoint and a few injected faults."""
    return {
        "endpoints": list(endpoints),
        "health": DEMO_HEALTH,
        "retry": RetryPolicy(max_attempts=fail + 3),
    }


def endpoint_rows(
    stats: dict[str, dict[str, Any]], endpoints: tuple[Endpoint, ...], fail: int
) -> list[dict[str, Any]]:
    """The per-endpoint table of a run, from ``client.stats()["endpoints"]``
    (the first *fail* of *endpoints* refuse connections)."""
    roles = {e.name: REFUSING if i < fail else SERVING for i, e in enumerate(endpoints)}
    rows = []
    for name, entry in stats.items():
        latency = entry.get("latency_ewma_ms")
        rows.append(
            {
                "endpoint": name,
                "role": roles.get(name, ""),
                "state": entry["state"],
                "requests": entry["requests"],
                "failures": entry["failures"],
                "cooldowns": entry["cooldowns"],
                "latency_ms": None if latency is None else round(latency, 1),
                "last_error": entry["last_error"],
            }
        )
    return rows


def group_head(report: dict[str, Any]) -> str:
    """The report's first line in group mode."""
    opts, server = report["options"], report["server"]
    failing = [e["name"] for e in server["endpoints"] if e["role"] == REFUSING]
    text = (
        f"llmpool demo: {opts['calls']} calls from {opts['threads']} threads "
        f"({round(opts['stream_ratio'] * 100)}% streamed) over a {server['kind']} "
        f"(embedded mock servers, {server['latency_ms']:g} ms latency, "
        f"{server['fault_rate']:.0%} faults{', over TLS' if server['tls'] else ''})"
    )
    if failing:
        text += f"; {', '.join(failing)} {REFUSING} (its port is closed)"
    return text


_COLUMNS = (
    ("endpoint", 10),
    ("role", 20),
    ("state", 10),
    ("requests", 9),
    ("failures", 9),
    ("cool-downs", 11),
    ("latency", 10),
)


def _cells(row: dict[str, Any]) -> list[str]:
    latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f} ms"
    return [
        row["endpoint"],
        row["role"],
        row["state"],
        str(row["requests"]),
        str(row["failures"]),
        str(row["cooldowns"]),
        latency,
    ]


def _short(text: str | None, width: int = 70) -> str:
    if not text:
        return "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def render_endpoints(run: dict[str, Any]) -> list[str]:
    """Text lines: the per-endpoint table of *run*, then each endpoint's last error."""
    rows = run["endpoints"]
    lines = [
        f"Endpoints ({run['mode']} run):",
        "  " + "".join(title.ljust(width) for title, width in _COLUMNS) + "last error",
    ]
    for row in rows:
        cells = _cells(row)
        lines.append(
            "  "
            + "".join(cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))
            + _short(row["last_error"])
        )
    refusing = [r for r in rows if r["role"] == REFUSING]
    if refusing:
        failed = sum(r["failures"] for r in refusing)
        cooled = sum(r["cooldowns"] for r in refusing)
        lines.append(
            f"Failover: {failed} attempts failed at the refusing endpoint(s) and went on to "
            f"another at once; {cooled} cool-downs, each ended by one probe call."
        )
    return lines


def render_endpoints_html(run: dict[str, Any], esc: Any) -> str:
    """The per-endpoint table of *run* as an HTML section (*esc* escapes text)."""
    titles = [title for title, _ in _COLUMNS] + ["last error"]
    head = "".join(f"<th>{esc(t)}</th>" for t in titles)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{esc(c)}</td>' for c in _cells(row))
        + f"<td>{esc(_short(row['last_error'], 120))}</td></tr>"
        for row in run["endpoints"]
    )
    return (
        '<section class="endpoints">\n<h2>Endpoints</h2>\n'
        '<p class="note">Each endpoint of the group after the pooled run: its state, the '
        "attempts routed to it, the failures, the cool-downs it went through, its latency "
        "average and its last error. A refusing endpoint gets one probe per cool-down.</p>\n"
        f'<table class="endpoints"><tr>{head}</tr>{body}</table>\n</section>'
    )
