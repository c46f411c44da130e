"""Shared fixtures: the real MovieLens data in ../shared/data (read-only, never downloaded)."""

from __future__ import annotations

import os
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
