"""The original design's code runs as written: keyword constructors, acquire/release, plugins."""

from __future__ import annotations

from pathlib import Path

import llmpool
from llmpool.plugins import LLMPlugin
from llmpool.testing import MockLLMServer

SEED_PLUGIN = """
from llmpool.plugins import LLMPlugin

class Counter(LLMPlugin):
    name = "counter"

    def on_attempt(self, ctx, attempt):
        pass
"""


class Tagger(LLMPlugin):
    name = "tagger"


def test_original_design_code_runs(mock_server: MockLLMServer, tmp_path: Path) -> None:
    """The design's pool, memory manager and plugin calls work as written, against a server."""
    pool = llmpool.ConnectionPool(max_connections=10, max_keepalive=10, timeout=30.0)
    memory = llmpool.MemoryManager(max_memory_mb=512)
    plugins = llmpool.PluginManager()
    tagger = plugins.register_plugin(Tagger())
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir(mode=0o755)
    plugin_dir.chmod(0o755)
    (plugin_dir / "counter.py").write_text(SEED_PLUGIN)
    (plugin_dir / "counter.py").chmod(0o644)
    assert plugins.load_plugins(plugin_dir) == ["counter"]
    assert tagger is not None and [p.name for p in plugins.plugins] == ["counter", "tagger"]

    connection = pool.acquire(mock_server.base_url)
    assert pool.get_stats()["in_use"] == 1
    pool.release(mock_server.base_url, connection)
    client = llmpool.Client(
        base_url=mock_server.base_url, api_key="k", pool=pool, plugins=plugins, memory=memory
    )
    with client:
        reply = client.chat(model="m", messages=[{"role": "user", "content": "hi"}])
    memory.track_memory_usage("chat", len(reply.text))
    assert reply.finish_reason == "stop"
    assert pool.get_stats()["in_use"] == 0
    assert memory.report().operations["chat"].count == 1
    plugins.close()
    pool.close()
