"""Every numeric configuration key has sane bounds: no NaN, infinity, bool or absurd value."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmpool import ConfigError, load_config
from llmpool.validators import MAX_CONNECTIONS, MAX_SECONDS

NAN, INF = math.nan, math.inf

#: Durations: seconds in (0, MAX_SECONDS] (or [0, ...] where zero means "at once").
SECONDS = [
    "connection_pool.timeout",
    "connection_pool.connect_timeout",
    "connection_pool.read_timeout",
    "connection_pool.pool_timeout",
    "connection_pool.keepalive_expiry",
    "connection_pool.max_connection_age",
    "connection_pool.leak_timeout",
    "memory.sample_interval",
    "memory.gc_cooldown",
    "memory.pressure_repeat",
    "client.timeout",
    "client.deadline",
]

BAD = [
    *[(key, value) for key in SECONDS for value in (NAN, INF, -1.0, True, MAX_SECONDS + 1)],
    *[
        (key, value)
        for key in ("connection_pool.max_connections", "connection_pool.max_hosts")
        for value in (0, -1, True, 1.5, NAN, MAX_CONNECTIONS + 1, 10**9)
    ],
    ("connection_pool.max_keepalive", -1),
    ("connection_pool.max_keepalive", True),
    ("connection_pool.tcp_keepidle", 32768),
    ("connection_pool.tcp_keepintvl", 32768),
    ("connection_pool.tcp_keepcnt", 128),
    ("connection_pool.tcp_keepcnt", 0),
    ("connection_pool.expected_threads", 10**9),
    ("memory.max_memory_mb", INF),
    ("memory.max_memory_mb", NAN),
    ("memory.max_memory_mb", -1),
    ("memory.history", 10**9),
    ("memory.max_operations", 10**9),
    ("memory.hysteresis", 1.0),
    ("memory.hysteresis", -0.1),
    ("memory.hysteresis", NAN),
    ("memory.warn", NAN),
    ("client.max_response_bytes", 0),
    ("client.max_response_bytes", True),
    ("client.max_response_bytes", 1.5),
    ("client.max_stream_text", 0),
]


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_a_bad_number_names_the_key(key: str, value: object) -> None:
    """NaN, infinity, bools, negatives and absurd sizes are ConfigErrors naming the dotted key."""
    section, field = key.split(".")
    with pytest.raises(ConfigError) as info:
        load_config({section: {field: value}}, environ={})
    assert info.value.key == key


def test_the_bounds_themselves_are_accepted() -> None:
    """The largest allowed values load."""
    config = load_config(
        {
            "connection_pool": {
                "max_connections": MAX_CONNECTIONS,
                "max_hosts": MAX_CONNECTIONS,
                "pool_timeout": MAX_SECONDS,
                "tcp_keepidle": 32767,
                "tcp_keepcnt": 127,
            },
            "client": {"deadline": MAX_SECONDS},
            "memory": {"gc_cooldown": 0, "hysteresis": 0.5},
        },
        environ={},
    )
    assert config.connection_pool.max_connections == MAX_CONNECTIONS
    assert config.client.deadline == MAX_SECONDS


def test_a_bound_from_a_file_names_key_file_and_line(tmp_path: Path) -> None:
    """A value above the bound in YAML names the key, the file and the line."""
    path = tmp_path / "llmpool.yaml"
    path.write_text("connection_pool:\n  timeout: 5\n  max_connections: 1000000000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == "connection_pool.max_connections"
    assert info.value.file == str(path) and info.value.line == 3
    assert str(MAX_CONNECTIONS) in str(info.value)


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("LLMPOOL_MAX_CONNECTIONS", "1e9"),
        ("LLMPOOL_MAX_CONNECTIONS", "20.0"),
        ("LLMPOOL_MAX_CONNECTIONS", "1000000"),
        ("LLMPOOL_MAX_KEEPALIVE", "1e1"),
        ("LLMPOOL_MAX_ATTEMPTS", "3.0"),
        ("LLMPOOL_TIMEOUT", "nan"),
        ("LLMPOOL_DEADLINE", "inf"),
        ("LLMPOOL_POOL_TIMEOUT", "-1"),
        ("LLMPOOL_KEEPALIVE_EXPIRY", "1e12"),
        ("LLMPOOL_MAX_MEMORY_MB", "nan"),
    ],
)
def test_a_bad_environment_number_names_the_variable(var: str, raw: str) -> None:
    """A float-looking integer, NaN, infinity or an out-of-range value names the variable."""
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={var: raw})
    assert var in str(info.value)
    assert info.value.key is not None and info.value.key.endswith(
        var.removeprefix("LLMPOOL_").lower()
    )


def test_integer_environment_values_still_load() -> None:
    """Plain integers (with spaces) and decimals load from the environment as before."""
    config = load_config(
        None,
        environ={
            "LLMPOOL_MAX_CONNECTIONS": " 20 ",
            "LLMPOOL_MAX_ATTEMPTS": "5",
            "LLMPOOL_TIMEOUT": "2.5",
        },
    )
    assert config.connection_pool.max_connections == 20
    assert config.client.retry.max_attempts == 5
    assert config.client.timeout == 2.5


def test_every_integer_environment_key_is_parsed_as_an_integer() -> None:
    """Each LLMPOOL_* variable whose key holds an int is read strictly as an integer."""
    import attrs

    from llmpool.config_loading import _INT_ENV_KEYS, _SECTIONS, ENV_VARS
    from llmpool.retry import RetryPolicy

    classes = {**_SECTIONS, "client.retry": RetryPolicy}
    int_keys = set()
    for key in ENV_VARS.values():
        section, field = key.rsplit(".", 1)
        kind = str(attrs.fields_dict(classes[section])[field].type)
        if kind.split(" ", maxsplit=1)[0] == "int":
            int_keys.add(key)
    assert int_keys == set(_INT_ENV_KEYS)
