"""Sphinx configuration for llmpool's documentation (no network needed)."""

from __future__ import annotations

import llmpool

project = "llmpool"
author = "the llmpool developers"
copyright = "2026, the llmpool developers"
release = llmpool.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = True
# Types from other projects: no intersphinx here (CI has no network but the
# package registries), so references to them stay plain text.
nitpick_ignore_regex = [
    (r"py:.*", r"(abc|attrs|urllib3|requests|ssl|socket|threading|typing|collections|stevedore|psutil|prometheus_client|yaml|enum|os)(\..*)?"),
    (r"py:.*", r"(Any|Callable|Iterator|Iterable|Mapping|Sequence|Self|Exception|BaseException|ValueError|int|str|float|bool|bytes|dict|list|tuple|None)"),
]
doctest_global_setup = "import llmpool"
