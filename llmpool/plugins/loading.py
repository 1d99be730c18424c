"""Finding plugins: stevedore entry points, plugin directories, the environment.

Loading never takes the process down: an import error, a syntax error, a
``SystemExit`` or any other ``BaseException`` except ``KeyboardInterrupt``
raised while a plugin's module is imported becomes a
:class:`PluginLoadFailure` and the other plugins still load. This module
only finds and imports; :class:`~llmpool.PluginManager`
validates, sets up and registers what it finds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import re
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from stevedore import NamedExtensionManager
from stevedore.extension import Extension

from llmpool.exceptions import ConfigError
from llmpool.plugins.base import LLMPlugin
from llmpool.plugins.validation import NAME_PATTERN, check_plugin

__all__ = [
    "ENV_VAR",
    "PluginCandidate",
    "PluginLoadFailure",
    "describe_installed",
    "directory_candidates",
    "entry_point_candidates",
    "extension_candidates",
    "resolve_plugin_names",
]

#: The environment variable that overrides the configured plugin names.
ENV_VAR = "LLMPOOL_PLUGINS"

_DEFAULT_NAMESPACES = ("llmpool.plugins", "llmpool.providers")


@attrs.frozen
class PluginLoadFailure:
    """A plugin that could not be loaded: its name, where from, and why. Immutable."""

    name: str
    source: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The failure as a plain dict (for ``stats()``)."""
        return {"name": self.name, "source": self.source, "reason": self.reason}


@attrs.frozen(kw_only=True)
class PluginCandidate:
    """Something found that should be a plugin, not yet validated. Immutable.

    ``target`` is an :class:`LLMPlugin` subclass or instance. ``name`` is the
    name it must have (an entry point's), or None when the plugin names
    itself; ``default_name`` is used when it does not (a file's stem).
    """

    target: object
    source: str
    name: str | None = None
    default_name: str | None = None
    module: str | None = None
    sha256: str | None = None


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a load failure: the exception's type and message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------- entry points


class _LoadAborted(Exception):
    """Carries any exception raised while importing an entry point to stevedore's
    failure callback (stevedore itself lets ``SystemExit`` and ``AssertionError`` through)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe_error(cause))
        self.cause = cause


def _guarded(load: Callable[[], Extension[Any] | None]) -> Extension[Any] | None:
    try:
        return load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin may not end the process
        raise _LoadAborted(exc) from exc


class _SafeNamedExtensionManager(NamedExtensionManager[Any]):
    """A NamedExtensionManager whose loading never lets a plugin's exception out."""

    def _load_one_plugin(
        self,
        ep: importlib.metadata.EntryPoint,
        invoke_on_load: bool,
        invoke_args: tuple[Any, ...],
        invoke_kwds: dict[str, Any],
    ) -> Extension[Any] | None:
        parent = super()._load_one_plugin
        return _guarded(lambda: parent(ep, invoke_on_load, invoke_args, invoke_kwds))


def entry_point_candidates(
    names: Sequence[str] | None, namespace: str, *, load_all: bool = False
) -> tuple[list[PluginCandidate], list[PluginLoadFailure]]:
    """Import the entry points *names* of *namespace* (in that order) through stevedore.

    ``load_all=True`` imports every installed one instead, sorted by name;
    ``names=None`` without ``load_all`` imports nothing. A name that two
    installed distributions declare with different targets is a failure:
    neither is loaded, rather than one silently overriding the other.
    """
    source = f"entry_point:{namespace}"
    installed = _installed_targets(namespace)
    if load_all:
        wanted = sorted(installed)
    elif names:
        wanted = list(dict.fromkeys(names))
    else:
        return [], []
    failures = [
        PluginLoadFailure(
            name,
            source,
            f"entry point {name!r} is declared {len(installed[name])} times in {namespace!r} "
            f"({', '.join(installed[name])}); uninstall all but one",
        )
        for name in wanted
        if len(installed.get(name, ())) > 1
    ]
    wanted = [name for name in wanted if len(installed.get(name, ())) <= 1]

    def on_failure(_mgr: object, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
        failures.append(PluginLoadFailure(ep.name, source, describe_error(exc)))

    manager = _SafeNamedExtensionManager(
        namespace,
        wanted,
        name_order=True,
        on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=None,
    )
    extensions = list(manager.extensions)
    failed = {f.name for f in failures}
    found = {ext.name for ext in extensions}
    failures.extend(
        PluginLoadFailure(name, source, f"no entry point named {name!r} in {namespace!r}")
        for name in wanted
        if name not in found and name not in failed
    )
    return extension_candidates(extensions, source), failures


def _installed_targets(namespace: str) -> dict[str, list[str]]:
    """Each entry point name of *namespace* with its distinct targets (no import)."""
    targets: dict[str, list[str]] = {}
    for ep in importlib.metadata.entry_points(group=namespace):
        values = targets.setdefault(ep.name, [])
        if ep.value not in values:
            values.append(ep.value)
    return targets


def extension_candidates(
    extensions: Iterable[Extension[Any]], source: str
) -> list[PluginCandidate]:
    """Candidates from stevedore extensions (also those of ``make_test_instance``)."""
    candidates = []
    for ext in extensions:
        target = ext.obj if ext.obj is not None else ext.plugin
        module = ext.entry_point.module if ext.entry_point is not None else None
        candidates.append(
            PluginCandidate(
                target=target,
                source=source,
                name=ext.name,
                module=module or getattr(target, "__module__", None),
            )
        )
    return candidates


# --------------------------------------------------------------------------- directories


#: Files owned by root are trusted by every user, as sshd and sudo trust them.
_ROOT_UID = 0


def _current_uid() -> int:
    return os.geteuid()


def _user(uid: int) -> str:
    """``uid 33 (www-data)``, or ``uid 33`` when the name is unknown."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OSError):
        return f"uid {uid}"


def _unsafe(st: os.stat_result, what: str, path: str) -> str | None:
    """Why a file or directory with status *st* must not be trusted, or None.

    The rule sshd (``StrictModes``) and sudo apply to their own files: owned
    by the current user or by root, and writable by nobody else (no group or
    other write bit). A root-owned, read-only ``/app/plugins`` read by a
    non-root worker is therefore trusted; a file another user owns, or one
    that a group could rewrite, could run that user's code in this process.
    """
    mode = stat.S_IMODE(st.st_mode)
    me = _current_uid()
    if st.st_uid not in (me, _ROOT_UID):
        return (
            f"{what} {path} is owned by {_user(st.st_uid)} (mode {mode:o}), neither the "
            f"current user ({_user(me)}) nor root; fix: chown root {path} (read-only "
            f"for the worker) or chown it to the user that loads it, and chmod go-w {path}"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{what} {path} (owner {_user(st.st_uid)}, mode {mode:o}) is writable by "
            f"group or others, who could run code in this process; fix: chmod go-w {path}"
        )
    return None


def directory_candidates(
    plugin_dir: str | os.PathLike[str],
) -> tuple[list[PluginCandidate], list[PluginLoadFailure]]:
    """Import each ``*.py`` file of *plugin_dir* (not starting with ``_``).

    The directory and every file must belong to the current user or to root
    and not be writable by group or others; a symlink must resolve inside the
    directory.
    Each file is imported from the bytes that were hashed (sha256), under a
    unique module name, without touching ``sys.path``.
    """
    given = os.fspath(plugin_dir)
    source = f"directory:{given}"
    root = os.path.realpath(given)
    try:
        root_stat = os.stat(root)
    except OSError as exc:
        return [], [PluginLoadFailure(given, source, describe_error(exc))]
    if not stat.S_ISDIR(root_stat.st_mode):
        return [], [PluginLoadFailure(given, source, f"{given} is not a directory")]
    problem = _unsafe(root_stat, "plugin directory", given)
    if problem:
        return [], [PluginLoadFailure(given, source, problem)]
    candidates: list[PluginCandidate] = []
    failures: list[PluginLoadFailure] = []
    for entry in sorted(os.listdir(root)):
        if not entry.endswith(".py") or entry.startswith(("_", ".")):
            continue
        path = os.path.join(root, entry)
        found, reason = _load_file(root, path)
        if reason is not None:
            failures.append(PluginLoadFailure(entry[:-3], f"directory:{path}", reason))
        candidates.extend(found)
    return candidates, failures


def _read_trusted(root: str, path: str) -> tuple[str, bytes] | str:
    """(real path, content) of a plugin file, or why it is refused."""
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root:
        return f"{path} is a symlink that resolves outside the plugin directory ({real})"
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return describe_error(exc)
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return f"{path} is not a regular file"
        problem = _unsafe(st, "plugin file", path)
        if problem:
            return problem
        return real, handle.read()


def _module_name(root: str, stem: str) -> str:
    digest = hashlib.sha256(root.encode()).hexdigest()[:10]
    return f"_llmpool_plugin_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', stem)}"


def _load_file(root: str, path: str) -> tuple[list[PluginCandidate], str | None]:
    trusted = _read_trusted(root, path)
    if isinstance(trusted, str):
        return [], trusted
    real, content = trusted
    sha256 = hashlib.sha256(content).hexdigest()
    stem = Path(path).stem
    name = _module_name(root, stem)
    try:
        module = _execute(name, real, content)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin may not end the process
        return [], describe_error(exc)
    targets = _plugins_in(module)
    if not targets:
        return [], f"{path} defines no LLMPlugin subclass and no 'plugin' attribute"
    source = f"directory:{path}"
    return [
        PluginCandidate(target=target, source=source, default_name=stem, module=name, sha256=sha256)
        for target in targets
    ], None


def _execute(name: str, path: str, content: bytes) -> Any:
    """Run *content* as the module *name* (registered in sys.modules while it lives)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:  # pragma: no cover - a .py path always has a spec
        raise ImportError(f"cannot build a module spec for {path}")
    module = importlib.util.module_from_spec(spec)
    code = compile(content, path, "exec", dont_inherit=True)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _plugins_in(module: Any) -> list[object]:
    exposed = getattr(module, "plugin", None)
    if exposed is not None:
        return [exposed]
    return [
        value
        for _, value in sorted(vars(module).items())
        if isinstance(value, type)
        and issubclass(value, LLMPlugin)
        and value.__module__ == module.__name__
    ]


# --------------------------------------------------------------------------- environment


def resolve_plugin_names(
    configured: Sequence[str] | None, environ: Mapping[str, str] = os.environ
) -> list[str]:
    """The plugin names to load: ``LLMPOOL_PLUGINS`` when set, else *configured*.

    ``LLMPOOL_PLUGINS=""`` means no plugin; otherwise it is a comma-separated
    list of names (blanks around names are ignored). Duplicates are dropped,
    the first occurrence keeps its place. A malformed name is a ConfigError.
    """
    raw = environ.get(ENV_VAR)
    if raw is None:
        names = list(configured or [])
        key = "plugins"
    else:
        names = [part.strip() for part in raw.split(",") if part.strip()]
        key = ENV_VAR
    for name in names:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{name!r} is not a valid plugin name", key=key, value=name)
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- listing


def describe_installed(
    namespaces: Sequence[str] = _DEFAULT_NAMESPACES, *, load: bool = False
) -> list[dict[str, Any]]:
    """Describe the installed plugins and providers without importing them.

    One dict per entry point: ``name``, ``namespace``, ``value``, ``module``,
    ``distribution``, ``version`` and ``duplicate`` (another distribution
    declares the same name with another target: neither will load). With
    ``load=True`` each is imported (and a plugin validated), adding
    ``loaded`` (bool) and ``error`` (the reason or None). Sorted by
    namespace, then name.
    """
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for namespace in namespaces:
        for ep in importlib.metadata.entry_points(group=namespace):
            key = (namespace, ep.name, ep.value)
            if key in seen:
                continue
            seen.add(key)
            dist = getattr(ep, "dist", None)
            row: dict[str, Any] = {
                "name": ep.name,
                "namespace": namespace,
                "value": ep.value,
                "module": ep.module,
                "distribution": dist.metadata["Name"] if dist is not None else None,
                "version": dist.version if dist is not None else None,
            }
            if load:
                row["error"] = _try_load(ep, plugin=namespace != "llmpool.providers")
                row["loaded"] = row["error"] is None
            rows.append(row)
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[row["namespace"], row["name"]] = counts.get((row["namespace"], row["name"]), 0) + 1
    for row in rows:
        row["duplicate"] = counts[row["namespace"], row["name"]] > 1
    rows.sort(key=lambda r: (r["namespace"], r["name"]))
    return rows


def _try_load(ep: importlib.metadata.EntryPoint, *, plugin: bool) -> str | None:
    """Import *ep*; validate it when it is a plugin. The reason it fails, or None."""
    try:
        target = ep.load()
        is_plugin = isinstance(target, LLMPlugin) or (
            isinstance(target, type) and issubclass(target, LLMPlugin)
        )
        if not is_plugin:
            return f"{ep.value} is not an LLMPlugin" if plugin else None
        instance = target() if isinstance(target, type) else target
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a plugin may not end the process
        return describe_error(exc)
    if not instance.name:
        instance.name = ep.name
    return check_plugin(instance)
