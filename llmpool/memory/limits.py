"""Limit discovery: how much memory this process may use, and who says so.

In order: ``max_memory_mb`` from the configuration (source ``"config"``);
else the cgroup v2 limit (``memory.max`` of the process's own cgroup and its
visible ancestors, ``"max"`` meaning none; source ``"cgroup v2"``); else the
cgroup v1 limit (``memory.limit_in_bytes`` and ``hierarchical_memory_limit``
of the memory controller's cgroup; a huge value means none; source
``"cgroup v1"``); else a default budget of 512 MiB (source ``"default"``), or
the host's total memory when the host has less (source ``"host"``). A cgroup
limit at or above the host's total memory binds nothing and counts as none.

Every path is read under an injectable *root* so tests use fixture trees.
Nothing here is cached: :func:`discover_limit` reads the files each time.
"""

from __future__ import annotations

import logging
import os

import attrs

__all__ = [
    "DEFAULT_BUDGET",
    "CgroupFiles",
    "MemoryLimit",
    "discover_limit",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "stat_value",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: The budget when neither the configuration nor a cgroup sets one (the seed's 512 MB).
DEFAULT_BUDGET = 512 * MiB
#: cgroup v1 writes "no limit" as a page-rounded 2**63 - 1; anything this big is none.
_UNLIMITED = 1 << 60


@attrs.frozen(kw_only=True)
class CgroupFiles:
    """Where a cgroup's usage is read. Immutable; share freely between threads.

    ``usage_file`` is ``memory.current`` (v2) or ``memory.usage_in_bytes``
    (v1); ``stat_file`` is ``memory.stat``, whose ``inactive_key``
    (``inactive_file`` or ``total_inactive_file``) is subtracted from the
    usage to get the working set the kernel's OOM logic looks at.
    """

    version: int
    directory: str
    usage_file: str
    stat_file: str
    inactive_key: str


@attrs.frozen(kw_only=True)
class MemoryLimit:
    """The process's memory budget and where it came from. Immutable; share freely.

    ``source`` is ``"config"``, ``"cgroup v2"``, ``"cgroup v1"``,
    ``"default"`` or ``"host"``. ``cgroup_limit`` is the cgroup's limit when
    one was found (even when the configuration overrides it), ``host_total``
    the machine's physical memory. ``cgroup`` names the files to sample when
    the budget is the cgroup's (None otherwise: then RSS is compared).
    """

    bytes: int
    source: str
    cgroup_limit: int | None = None
    host_total: int | None = None
    cgroup: CgroupFiles | None = None

    @property
    def from_cgroup(self) -> bool:
        """Whether the budget is a cgroup limit."""
        return self.source.startswith("cgroup")


# --------------------------------------------------------------------------- parsing


def parse_proc_cgroup(text: str) -> tuple[str | None, str | None]:
    """Parse ``/proc/self/cgroup``: the v2 path (``0::/path``) and the v1 memory path."""
    v2: str | None = None
    v1: str | None = None
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """Parse ``/proc/self/mountinfo``: ``(root, mount point)`` of the cgroup2
    mount and of the cgroup v1 mount carrying the memory controller."""
    v2: tuple[str, str] | None = None
    v1: tuple[str, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 2:
            continue
        fstype = fields[sep + 1]
        options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        mount = (_unescape(fields[3]), _unescape(fields[4]))
        if fstype == "cgroup2" and v2 is None:
            v2 = mount
        elif fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = mount
    return v2, v1


def stat_value(text: bytes, key: bytes) -> int | None:
    """The value of *key* in a ``memory.stat`` text (``key value`` lines), or None."""
    if text.startswith(key + b" "):
        start = len(key) + 1
    else:
        found = text.find(b"\n" + key + b" ")
        if found < 0:
            return None
        start = found + len(key) + 2
    end = text.find(b"\n", start)
    try:
        return int(text[start : end if end >= 0 else len(text)])
    except ValueError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _limit_value(text: str | None) -> int | None:
    """A limit file's value in bytes; None for "max", a huge value, or junk."""
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if 0 < value < _UNLIMITED else None


# --------------------------------------------------------------------------- discovery


def _join(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _cgroup_dir(root: str, mount: tuple[str, str], path: str) -> tuple[str, str]:
    """The directory of *path* under *mount*, and the mount's directory.

    A container without a cgroup namespace shows its full path in
    ``/proc/self/cgroup`` but mounts only its own subtree: strip the mount's
    root from the path; fall back to the mount point when the result is not
    there.
    """
    mount_root, mount_point = mount
    top = _join(root, mount_point)
    rel = path
    if mount_root != "/":
        prefix = mount_root.rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            rel = path[len(prefix) :]
    leaf = _join(top, rel) if rel.strip("/") else top
    return (leaf if os.path.isdir(leaf) else top), top


def _lineage(leaf: str, top: str) -> list[str]:
    """*leaf* and its ancestors up to and including *top*."""
    dirs = [leaf]
    current = leaf
    while os.path.normpath(current) != os.path.normpath(top):
        parent = os.path.dirname(current.rstrip("/"))
        if parent == current or len(parent) < len(top.rstrip("/")):
            break
        current = parent
        dirs.append(current)
    return dirs


def _tightest(dirs: list[str], name: str) -> tuple[int | None, str]:
    """The smallest limit file *name* among *dirs*, and where it was (else the leaf)."""
    best: int | None = None
    where = dirs[0]
    for directory in dirs:
        value = _limit_value(_read(os.path.join(directory, name)))
        if value is not None and (best is None or value < best):
            best, where = value, directory
    return best, where


def _v2(root: str, mount: tuple[str, str], path: str) -> tuple[int | None, CgroupFiles] | None:
    leaf, top = _cgroup_dir(root, mount, path)
    dirs = _lineage(leaf, top)
    if not any(os.path.exists(os.path.join(d, "memory.max")) for d in dirs) and not (
        os.path.exists(os.path.join(leaf, "memory.current"))
    ):
        return None  # the memory controller is not on the v2 hierarchy (hybrid host)
    limit, where = _tightest(dirs, "memory.max")
    files = CgroupFiles(
        version=2,
        directory=where,
        usage_file=os.path.join(where, "memory.current"),
        stat_file=os.path.join(where, "memory.stat"),
        inactive_key="inactive_file",
    )
    return limit, files


def _v1(root: str, mount: tuple[str, str], path: str) -> tuple[int | None, CgroupFiles] | None:
    leaf, top = _cgroup_dir(root, mount, path)
    if not os.path.exists(os.path.join(leaf, "memory.usage_in_bytes")):
        return None
    limit, where = _tightest(_lineage(leaf, top), "memory.limit_in_bytes")
    stat = _read(os.path.join(leaf, "memory.stat"))
    if stat is not None:
        # Covers ancestors that the container cannot see.
        hierarchical = stat_value(stat.encode(), b"hierarchical_memory_limit")
        tighter = hierarchical is not None and (limit is None or hierarchical < limit)
        if tighter and hierarchical is not None and hierarchical < _UNLIMITED:
            limit, where = hierarchical, leaf
    files = CgroupFiles(
        version=1,
        directory=where,
        usage_file=os.path.join(where, "memory.usage_in_bytes"),
        stat_file=os.path.join(where, "memory.stat"),
        inactive_key="total_inactive_file",
    )
    return limit, files


def _default_mounts(root: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """Where cgroups are usually mounted, for when mountinfo is unreadable."""
    unified = _join(root, "/sys/fs/cgroup/cgroup.controllers")
    v2 = ("/", "/sys/fs/cgroup") if os.path.exists(unified) else ("/", "/sys/fs/cgroup/unified")
    return v2, ("/", "/sys/fs/cgroup/memory")


def find_cgroup(root: str = "/") -> tuple[int | None, CgroupFiles] | None:
    """The cgroup memory limit (None: no limit) and usage files, or None without cgroups."""
    text = _read(_join(root, "/proc/self/cgroup"))
    if text is None:
        return None
    v2_path, v1_path = parse_proc_cgroup(text)
    mountinfo = _read(_join(root, "/proc/self/mountinfo"))
    v2_mount, v1_mount = parse_mountinfo(mountinfo) if mountinfo is not None else (None, None)
    if mountinfo is None:
        v2_mount, v1_mount = _default_mounts(root)
    if v2_path is not None and v2_mount is not None:
        found = _v2(root, v2_mount, v2_path)
        if found is not None:
            return found
    if v1_path is not None and v1_mount is not None:
        return _v1(root, v1_mount, v1_path)
    return None


def host_total(root: str = "/") -> int | None:
    """The machine's physical memory in bytes (``/proc/meminfo``, else psutil)."""
    text = _read(_join(root, "/proc/meminfo"))
    if text is not None:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    return int(parts[1]) * 1024
    if root != "/":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover - platform without psutil support
        return None


def discover_limit(max_memory_mb: float | None = None, *, root: str = "/") -> MemoryLimit:
    """Find the budget: configuration, cgroup v2, cgroup v1, then the default."""
    host = host_total(root)
    found = find_cgroup(root)
    cgroup_limit, files = found if found is not None else (None, None)
    if cgroup_limit is not None and host is not None and cgroup_limit >= host:
        cgroup_limit = None  # a limit above the machine binds nothing
    version = files.version if files is not None else None
    if max_memory_mb is not None:
        budget = int(max_memory_mb * MiB)
        if cgroup_limit is not None and budget > cgroup_limit:
            log.warning(
                "max_memory_mb (%.0f MiB) is above the cgroup v%s limit (%.0f MiB): the kernel "
                "will kill the process before the memory manager acts",
                max_memory_mb,
                version,
                cgroup_limit / MiB,
            )
        return MemoryLimit(
            bytes=budget, source="config", cgroup_limit=cgroup_limit, host_total=host
        )
    if cgroup_limit is not None:
        return MemoryLimit(
            bytes=cgroup_limit,
            source=f"cgroup v{version}",
            cgroup_limit=cgroup_limit,
            host_total=host,
            cgroup=files,
        )
    if host is not None and host < DEFAULT_BUDGET:
        return MemoryLimit(bytes=host, source="host", host_total=host)
    return MemoryLimit(bytes=DEFAULT_BUDGET, source="default", host_total=host)
