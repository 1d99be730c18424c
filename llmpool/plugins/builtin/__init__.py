"""The built-in plugins, found through the ``llmpool.plugins`` entry points
exactly like third-party ones: ``logging``, ``metrics``, ``ratelimit``,
``cache``, ``usage`` and ``otel``. Each module is imported only when its
plugin is loaded.
"""

from __future__ import annotations

__all__: list[str] = []
