"""Batches of what a source has ready: at least one item, at most `max_size`, in order.

A reader task pulls the source into a bounded buffer; each batch is the first item to arrive
plus whatever else is already buffered. A fast source (a file) gives full batches, a slow one
(personas generated through the endpoint) gives what it has, so nothing waits to fill a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


class _End:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error


async def ready_batches(source: AsyncIterator[T], max_size: int) -> AsyncIterator[list[T]]:
    buffer: asyncio.Queue[T | _End] = asyncio.Queue(max_size)

    async def read() -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:  # closed with the reader: its own work ends too
                    await buffer.put(item)
        except Exception as exc:  # handed to the consumer, in order
            await buffer.put(_End(exc))
        else:
            await buffer.put(_End())

    reader = asyncio.create_task(read(), name="source-reader")
    try:
        while True:
            batch: list[T] = []
            item = await buffer.get()
            while True:
                if isinstance(item, _End):
                    if batch:
                        yield batch
                    if item.error is not None:
                        raise item.error
                    return
                batch.append(item)
                if len(batch) >= max_size or buffer.empty():
                    break
                item = buffer.get_nowait()
            yield batch
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
