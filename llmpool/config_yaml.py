"""Reading a YAML configuration file once, safely (used by :func:`llmpool.load_config`).

The file is composed into one node tree; its aliases are checked against
:data:`MAX_ALIAS_NODES`; the data and the line number of every key both come
from that tree. Only safe YAML tags are understood.
"""

from __future__ import annotations

from typing import Any

from llmpool.exceptions import ConfigError

__all__ = ["MAX_ALIAS_NODES", "read_yaml"]


#: How many nodes aliases may add to a YAML document beyond its own: a
#: configuration file has no use for more, and a "billion laughs" document
#: (aliases of aliases) would otherwise expand to billions.
MAX_ALIAS_NODES = 10_000


def read_yaml(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Read the YAML configuration file at *path*: its data, and the line of
    each dotted key (for error messages), both from one composed node tree.

    An empty document is ``{}``. Every failure (a missing or unreadable
    file, invalid YAML, a refused character, an alias bomb, endless nesting,
    a top level that is not a mapping) is a
    :class:`~llmpool.exceptions.ConfigError` naming the file (and the line
    when known).
    """
    import yaml  # imported on first use: ``import llmpool`` stays fast

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc}", file=path) from exc
    loader: Any = None
    try:
        loader = yaml.SafeLoader(text)  # the reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        _check_aliases(node, path)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "the document cannot be parsed"
        raise ConfigError(f"invalid YAML: {problem}", file=path, line=line) from exc
    except RecursionError:
        raise ConfigError("invalid YAML: the document is nested too deeply", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections", file=path, line=1)
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines)
    return data, lines


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_aliases(root: Any, path: str) -> None:
    """Refuse a composed document whose aliases would expand it by more than
    MAX_ALIAS_NODES nodes, or that holds an alias inside its own anchor.
    Linear in the document's size: each distinct node is counted once."""
    distinct: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) not in distinct:
            distinct.add(id(node))
            todo.extend(_children(node))
    limit = len(distinct) + MAX_ALIAS_NODES
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def expanded(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in open_nodes:
            raise ConfigError(
                "invalid YAML: an alias refers to the node that contains it", file=path, line=line
            )
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += expanded(child)
            if total > limit:
                raise ConfigError(
                    f"invalid YAML: aliases expand the document by more than "
                    f"{MAX_ALIAS_NODES} nodes",
                    file=path,
                    line=line,
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    expanded(root)


def _collect_lines(node: Any, prefix: str, lines: dict[str, int]) -> None:
    import yaml

    if isinstance(node, yaml.SequenceNode):  # endpoints[0].name
        base = prefix.rstrip(".")
        for index, item in enumerate(node.value):
            key = f"{base}[{index}]"
            lines[key] = item.start_mark.line + 1
            _collect_lines(item, key + ".", lines)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        lines[key] = key_node.start_mark.line + 1
        _collect_lines(value_node, key + ".", lines)
