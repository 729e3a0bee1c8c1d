"""Fixtures of the tests that span the API's surfaces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from support.redis_db import REDIS_URL


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """A clean Redis database for counters shared by workers; skipped when Redis is down."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis at {REDIS_URL} unreachable ({exc})")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
