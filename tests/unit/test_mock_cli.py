"""The `llmpool` command's argument handling, without starting a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmpool.cli import build_parser, main
from llmpool.testing import Fault


def test_import_is_cheap() -> None:
    """Importing llmpool.cli does not import the mock server or other subcommands' modules."""
    code = "import sys, llmpool.cli; print(sorted(m for m in sys.modules if 'testing' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`llmpool` without a subcommand shows the help on stderr and exits 2."""
    assert main([]) == 2
    assert "mock-server" in capsys.readouterr().err


def test_bad_fault_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A fault spec that does not parse exits 2 with the parser's reason."""
    with pytest.raises(SystemExit) as caught:
        main(["mock-server", "--inject", "status=700"])
    assert caught.value.code == 2
    assert "400..599" in capsys.readouterr().err


def test_faults_need_a_rate(capsys: pytest.CaptureFixture[str]) -> None:
    """--faults without --fault-rate is refused before any socket is opened."""
    assert main(["mock-server", "--faults", "reset"]) == 2
    assert "--fault-rate" in capsys.readouterr().err


def test_bad_setting_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid setting (a rate above 1) exits 2 naming the field."""
    assert main(["mock-server", "--fault-rate", "2", "--faults", "reset"]) == 2
    assert "fault_rate" in capsys.readouterr().err


def test_options_map_to_settings() -> None:
    """Every mock-server option lands in the server's settings, milliseconds as seconds."""
    from llmpool.cli_mock_server import mock_server_options as _mock_server_options

    args = build_parser().parse_args(
        [
            "mock-server",
            "--reply", "r", "--echo", "--stream-chunks", "3", "--latency-ms", "250",
            "--chunk-latency-ms", "5", "--embedding-dim", "16", "--model", "a", "--model", "b",
            "--tool-call", "t", "--tool-arguments", '{"x": 1}', "--fault-rate", "0.5",
            "--faults", "reset;disconnect=2", "--seed", "9", "--close-after-requests", "4",
            "--drop-after-requests", "5", "--idle-timeout", "1.5",
        ]
    )  # fmt: skip
    options = _mock_server_options(args)
    assert options["latency"] == 0.25
    assert options["chunk_latency"] == 0.005
    assert options["models"] == ("a", "b")
    assert options["random_faults"] == (Fault.reset(), Fault.stream_disconnect(2))
    assert (options["reply"], options["echo"], options["stream_chunks"]) == ("r", True, 3)
    assert (options["seed"], options["close_after_requests"]) == (9, 4)
    assert (options["drop_after_requests"], options["idle_timeout"]) == (5, 1.5)
    assert (options["tool_call"], options["tool_arguments"]) == ("t", '{"x": 1}')


def test_demo_report_options_hide_credentials() -> None:
    """The demo report's options carry no API key and no password from --base-url."""
    from llmpool.demo import DemoOptions, _shown_options, _shown_server

    options = DemoOptions(base_url="http://user:pa55word@llm.example/v1", api_key="sk-demo-secret")
    shown = _shown_options(options)
    assert "api_key" not in shown
    assert shown["base_url"] == "http://***@llm.example/v1"
    server = _shown_server({"kind": "external", "base_url": options.base_url})
    assert server["base_url"] == "http://***@llm.example/v1"
