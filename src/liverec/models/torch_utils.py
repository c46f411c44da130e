"""Helpers shared by the PyTorch models (kept apart so numpy-only models never import torch)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the body with ``n_threads`` torch intra-op threads (0 = one per core), restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads if n_threads > 0 else (os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded native pools, made once (a fresh look costs about 1 ms, a limit through it
    15 µs)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def blas_threads(n_threads: int) -> Iterator[None]:
    """Run the body with NumPy's BLAS at ``n_threads`` threads (0 = one per core), restoring it after: the
    matrix products models hand to NumPy (scores against the item table) keep to the threads a fit was given."""
    with _blas_controller().limit(limits=n_threads if n_threads > 0 else (os.cpu_count() or 1), user_api="blas"):
        yield
