"""The dynamic batcher: requests that queue while a batch computes go together; failures stay per request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from liverec.serving.batching import Batcher


class Recorder:
    """Squares its requests; records each call's requests; the first call waits until released."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, requests: Sequence[int]) -> list[int]:
        self.calls.append(list(requests))
        if len(self.calls) == 1:
            self.release.wait(5)
        if self.fail_on in requests:
            raise ValueError(f"request {self.fail_on} is bad")
        return [r * r for r in requests]


async def _first_then_queued(batcher: Batcher[int, int], recorder: Recorder, queued: list[int]) -> list[object]:
    """Request 0 alone, then ``queued`` while it computes; returns every answer or error, in order."""
    first = asyncio.create_task(batcher(0))
    while not recorder.calls:  # the first call is running (and waiting)
        await asyncio.sleep(0.001)
    rest = [asyncio.create_task(batcher(r)) for r in queued]
    await asyncio.sleep(0.01)
    recorder.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_requests_queued_during_a_batch_go_together_in_order() -> None:
    recorder, sizes = Recorder(), []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(pool, recorder, max_batch=4, on_batch=sizes.append)
        answers = asyncio.run(_first_then_queued(batcher, recorder, [1, 2, 3, 4, 5, 6]))
    assert answers == [0, 1, 4, 9, 16, 25, 36]
    # the lone first request went at once; the six that queued behind it went in batches of at most 4
    assert recorder.calls == [[0], [1, 2, 3, 4], [5, 6]]
    assert sizes == [1, 4, 2]


def test_a_failing_request_fails_alone() -> None:
    recorder = Recorder(fail_on=2)
    with ThreadPoolExecutor(1) as pool:
        answers = asyncio.run(_first_then_queued(Batcher(pool, recorder, max_batch=8), recorder, [1, 2, 3]))
    assert answers[:2] == [0, 1] and answers[3] == 9
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "request 2 is bad"
    assert recorder.calls == [[0], [1, 2, 3], [1], [2], [3]]  # the batch failed, then one by one


def test_a_caller_that_went_away_is_not_computed() -> None:
    recorder = Recorder()

    async def scenario(batcher: Batcher[int, int]) -> list[object]:
        first = asyncio.create_task(batcher(0))
        while not recorder.calls:
            await asyncio.sleep(0.001)
        gone, kept = asyncio.create_task(batcher(1)), asyncio.create_task(batcher(2))
        await asyncio.sleep(0.01)
        gone.cancel()
        recorder.release.set()
        return await asyncio.gather(first, kept)

    with ThreadPoolExecutor(1) as pool:
        assert asyncio.run(scenario(Batcher(pool, recorder, max_batch=8))) == [0, 4]
    assert recorder.calls == [[0], [2]]


def test_bad_sizes_are_rejected() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="max_batch and concurrency"):
        Batcher(pool, Recorder(), max_batch=0)


def test_back_to_back_requests_of_one_caller_never_wait_forever() -> None:
    """A caller that sends its next request the moment the previous answer arrives (no I/O in between) must
    find a drain to serve it: the finishing drain leaves the set in the step it last looks at the queue, not
    in a done-callback that runs after the caller (which left every such request waiting forever)."""

    async def sequential() -> list[int]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher: Batcher[int, int] = Batcher(pool, lambda requests: [r * r for r in requests], max_batch=4)
            return [await batcher(r) for r in range(50)]

    assert asyncio.run(asyncio.wait_for(sequential(), timeout=10)) == [r * r for r in range(50)]
