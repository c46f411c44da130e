"""Shared fixtures: the real MovieLens data in ../shared/data (read-only, never downloaded)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def require_shared_data(name: str) -> Path:
    """Path of a dataset in ../shared/data; skip when absent on a user's clone, fail in CI (CI=true)."""
    path = SHARED_DATA / name
    if not path.exists():
        message = f"{path} not found: real-data tests need ../shared/data beside the repository"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ml100k_path() -> Path:
    return require_shared_data("ml-100k")


@pytest.fixture(scope="session")
def beauty_path() -> Path:
    """Amazon Beauty as the sequential-recommendation literature ships it (``user item1 item2 ...``)."""
    return require_shared_data("amazon-beauty")


#: The Redis the backend tests use (a real server; each test works under its own key prefix and deletes it).
REDIS_URL = os.environ.get("LIVEREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis; skip when there is none on a user's clone, fail in CI (CI=true)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as error:
        message = f"Redis backend tests need a Redis at {REDIS_URL} ({error})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix in the test Redis, deleted after the test."""
    from liverec.events.redis_log import delete_prefix, redis_client

    prefix = f"liverec-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis_client(redis_url)
    delete_prefix(client, prefix)
    client.close()
