"""Helpers shared by the PyTorch models (kept apart so numpy-only models never import torch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says, else every core)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the body with ``n_threads`` torch intra-op threads (0 = one per core), restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads if n_threads > 0 else available_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)
