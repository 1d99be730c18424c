"""Limit discovery on fixture trees: config, cgroup v2, cgroup v1, default, host."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmpool.memory import discover_limit
from llmpool.memory.limits import (
    DEFAULT_BUDGET,
    find_cgroup,
    host_total,
    parse_mountinfo,
    parse_proc_cgroup,
    stat_value,
)

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
MiB = 1024 * 1024
HOST = 16384000 * 1024


def tree(name: str) -> str:
    return str(FIXTURES / name)


def test_v2_limit_comes_from_the_process_cgroup() -> None:
    """cgroup v2: memory.max of the cgroup named in /proc/self/cgroup is the budget."""
    limit = discover_limit(root=tree("v2"))
    assert (limit.bytes, limit.source) == (256 * MiB, "cgroup v2")
    assert limit.cgroup_limit == 256 * MiB
    assert limit.host_total == HOST
    assert limit.cgroup is not None
    assert limit.cgroup.version == 2
    assert limit.cgroup.usage_file.endswith("app.slice/app.service/memory.current")
    assert limit.cgroup.inactive_key == "inactive_file"


def test_v2_max_means_no_limit() -> None:
    """'max' everywhere: no cgroup limit, the 512 MiB default applies."""
    limit = discover_limit(root=tree("v2_max"))
    assert (limit.bytes, limit.source, limit.cgroup_limit) == (DEFAULT_BUDGET, "default", None)
    assert limit.cgroup is None


def test_v2_nested_path_takes_the_tightest_ancestor() -> None:
    """A 'max' leaf under a limited pod: the pod's 512 MiB binds, and its usage is read."""
    limit = discover_limit(root=tree("v2_nested"))
    assert (limit.bytes, limit.source) == (512 * MiB, "cgroup v2")
    assert limit.cgroup is not None
    assert limit.cgroup.directory.endswith("kubepods/burstable/pod1")
    assert limit.cgroup.usage_file.endswith("pod1/memory.current")


def test_v2_cgroup_namespace_reads_the_mount_root() -> None:
    """Inside a cgroup namespace ('0::/') the limit is memory.max at the mount point."""
    limit = discover_limit(root=tree("v2_namespace"))
    assert (limit.bytes, limit.source) == (128 * MiB, "cgroup v2")


def test_v2_without_mountinfo_uses_the_usual_mount_point() -> None:
    """No /proc/self/mountinfo: /sys/fs/cgroup is assumed for a unified hierarchy."""
    limit = discover_limit(root=tree("v2_no_mountinfo"))
    assert (limit.bytes, limit.source) == (192 * MiB, "cgroup v2")


def test_a_cgroup_limit_above_the_host_binds_nothing() -> None:
    """64 GiB on a 16 GB host is no limit: the default budget applies."""
    limit = discover_limit(root=tree("v2_above_host"))
    assert (limit.bytes, limit.source, limit.cgroup_limit) == (DEFAULT_BUDGET, "default", None)


def test_v1_limit_in_a_container_without_cgroup_namespace() -> None:
    """cgroup v1: the memory controller's mount root strips the /docker/<id> path."""
    limit = discover_limit(root=tree("v1"))
    assert (limit.bytes, limit.source) == (1024 * MiB, "cgroup v1")
    assert limit.cgroup is not None
    assert limit.cgroup.version == 1
    assert limit.cgroup.usage_file.endswith("memory/memory.usage_in_bytes")
    assert limit.cgroup.inactive_key == "total_inactive_file"


def test_v1_huge_value_means_no_limit() -> None:
    """v1 writes 'no limit' as 2**63 rounded to a page: the default applies."""
    limit = discover_limit(root=tree("v1_unlimited"))
    assert (limit.bytes, limit.source) == (DEFAULT_BUDGET, "default")


def test_v1_hierarchical_limit_covers_invisible_ancestors() -> None:
    """An unlimited leaf under a limited (invisible) parent: memory.stat's
    hierarchical_memory_limit binds."""
    limit = discover_limit(root=tree("v1_hierarchical"))
    assert (limit.bytes, limit.source) == (768 * MiB, "cgroup v1")


def test_no_cgroup_gives_the_default_budget_and_reports_the_host() -> None:
    """Without /proc/self/cgroup the budget is 512 MiB and the host total is kept."""
    limit = discover_limit(root=tree("none"))
    assert (limit.bytes, limit.source, limit.host_total) == (DEFAULT_BUDGET, "default", HOST)
    assert find_cgroup(tree("none")) is None


def test_a_host_smaller_than_the_default_is_the_budget() -> None:
    """On a 256 MiB machine without a cgroup limit the host's memory is the budget."""
    limit = discover_limit(root=tree("small_host"))
    assert (limit.bytes, limit.source) == (256 * MiB, "host")


def test_config_overrides_the_cgroup_and_keeps_it_for_the_report() -> None:
    """max_memory_mb wins; the cgroup's limit is still reported; RSS is compared."""
    limit = discover_limit(100, root=tree("v2"))
    assert (limit.bytes, limit.source, limit.cgroup_limit) == (100 * MiB, "config", 256 * MiB)
    assert limit.cgroup is None
    assert not limit.from_cgroup


def test_config_above_the_cgroup_limit_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A budget above the cgroup limit logs a warning: the kernel would kill first."""
    with caplog.at_level(logging.WARNING, logger="llmpool.memory.limits"):
        discover_limit(1000, root=tree("v2"))
    assert "above the cgroup v2 limit" in caplog.text


def test_parse_proc_cgroup_finds_v2_and_v1_memory_paths() -> None:
    """The '0::' line is v2; the line whose controllers include memory is v1."""
    text = "12:cpu,cpuacct:/a\n4:memory:/docker/x\n0::/init.scope\nbroken line\n"
    assert parse_proc_cgroup(text) == ("/init.scope", "/docker/x")
    assert parse_proc_cgroup("") == (None, None)


def test_parse_mountinfo_finds_cgroup_mounts_and_unescapes() -> None:
    """cgroup2 and the v1 memory mount are found; octal escapes are decoded."""
    text = (
        "1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:2 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "3 1 0:3 /ns /sys/fs/my\\040cgroup rw shared:1 - cgroup2 cgroup2 rw\n"
        "4 1 0:4 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "garbage\n"
    )
    assert parse_mountinfo(text) == (("/ns", "/sys/fs/my cgroup"), ("/", "/sys/fs/cgroup/memory"))


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (b"inactive_file 5\nactive_file 7\n", b"inactive_file", 5),
        (b"active_file 7\ninactive_file 5\n", b"inactive_file", 5),
        (b"total_inactive_file 9\ninactive_file 5", b"inactive_file", 5),
        (b"inactive_file 5\ntotal_inactive_file 9\n", b"total_inactive_file", 9),
        (b"active_file 7\n", b"inactive_file", None),
        (b"inactive_file junk\n", b"inactive_file", None),
    ],
)
def test_stat_value_matches_whole_keys(text: bytes, key: bytes, expected: int | None) -> None:
    """memory.stat lookup matches the whole key, at the start or after a newline."""
    assert stat_value(text, key) == expected


def test_host_total_reads_meminfo_under_the_root() -> None:
    """MemTotal (kB) becomes bytes; a root without meminfo gives None."""
    assert host_total(tree("v2")) == HOST
    assert host_total(str(FIXTURES)) is None


def test_discovery_on_this_machine_gives_a_positive_budget() -> None:
    """The real filesystem yields some budget with a known source."""
    limit = discover_limit()
    assert limit.bytes > 0
    assert limit.source in {"cgroup v2", "cgroup v1", "default", "host"}
