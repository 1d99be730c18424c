"""Test helpers: :class:`MockLLMServer`, an OpenAI/Anthropic-compatible loopback server.

The server answers like the real APIs (JSON and server-sent events), records
every request and misbehaves on demand through :class:`Fault` values. See the
documentation's testing page.
"""

from __future__ import annotations

from llmpool.testing.faults import Fault, FaultKind, parse_fault, parse_faults
from llmpool.testing.injection import FAULT_HEADER
from llmpool.testing.recording import RecordedRequest
from llmpool.testing.server import MockLLMServer
from llmpool.testing.settings import DEFAULT_REPLY, MockSettings

__all__ = [
    "DEFAULT_REPLY",
    "FAULT_HEADER",
    "Fault",
    "FaultKind",
    "MockLLMServer",
    "MockSettings",
    "RecordedRequest",
    "parse_fault",
    "parse_faults",
]
