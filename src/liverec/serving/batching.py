"""Dynamic batching of concurrent requests: the ones that arrive while a batch computes go together next.

A recommendation is a model pass over one history plus a search; a model pass over several histories
costs much less per history (SASRec's user vectors: see docs/results.md), so the
server hands the model the requests that queued up while the previous batch was computing. There is
no timer: a request that finds a compute thread idle starts at once, alone, so batching adds no
latency at low load and grows with the queue under load (as the dynamic batchers of model servers do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger(__name__)


class Batcher(Generic[R, T]):
    """Runs ``function`` (requests -> answers, in order) on ``executor`` over the requests that queued.

    At most ``max_batch`` requests go in one call, and at most ``concurrency`` calls run at once (the
    executor's threads); ``on_batch`` is told each batch's size. Use from one event loop. If a batched
    call raises, its requests are retried one by one, so a request that fails fails alone.
    """

    def __init__(
        self,
        executor: Executor,
        function: Callable[[Sequence[R]], Sequence[T]],
        *,
        max_batch: int,
        concurrency: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError(f"max_batch and concurrency: expected positive integers, got {max_batch}, {concurrency}")
        self.executor = executor
        self.function = function
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.on_batch = on_batch  # called with each batch's size (metrics)
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._drains: set[asyncio.Task[None]] = set()

    async def __call__(self, request: R) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if len(self._drains) < self.concurrency:
            self._drains.add(asyncio.create_task(self._drain()))
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            # leave the set in the same step as the last look at the queue: a done-callback would run later,
            # and a request queued in between would find every drain slot taken and wait forever
            self._drains.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _drain_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = [(r, f) for r, f in self._pending[: self.max_batch] if not f.done()]  # done: client gone
            del self._pending[: self.max_batch]
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            requests = [request for request, _ in batch]
            try:
                answers = await loop.run_in_executor(self.executor, self.function, requests)
            except Exception as error:
                if len(batch) == 1:
                    _fail(batch[0][1], error)
                    continue
                logger.warning("a batch of %d requests failed (%r); retrying them one by one", len(batch), error)
                for request, future in batch:
                    try:
                        answer = (await loop.run_in_executor(self.executor, self.function, [request]))[0]
                    except Exception as single:
                        _fail(future, single)
                    else:
                        _resolve(future, answer)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                _resolve(future, answer)


def _resolve(future: asyncio.Future[T], answer: T) -> None:
    if not future.done():  # done: the caller went away
        future.set_result(answer)


def _fail(future: asyncio.Future[T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
