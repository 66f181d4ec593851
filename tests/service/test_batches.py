"""Source batching for admission: full batches from a fast source, no waiting on a slow one,
order kept, a source error delivered after the items before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.batches import ready_batches


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


def test_a_fast_source_gives_full_batches_in_order() -> None:
    async def collect() -> list[list[int]]:
        return [batch async for batch in ready_batches(numbers(150), 64)]

    batches = asyncio.run(collect())
    assert [len(b) for b in batches] == [64, 64, 22]
    assert [i for b in batches for i in b] == list(range(150))


def test_a_slow_source_is_not_waited_for() -> None:
    more = asyncio.Event()

    async def slow() -> AsyncIterator[int]:
        for i in range(3):
            yield i
        await more.wait()  # the rest only comes after the first batch was handed out
        for i in range(3, 5):
            yield i

    async def collect() -> list[list[int]]:
        out = []
        async for batch in ready_batches(slow(), 64):
            out.append(batch)
            more.set()
        return out

    assert asyncio.run(collect()) == [[0, 1, 2], [3, 4]]


def test_a_source_error_comes_after_the_items_before_it() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    async def collect(seen: list[int]) -> None:
        async for batch in ready_batches(broken(), 64):
            seen.extend(batch)

    seen: list[int] = []
    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(collect(seen))
    assert seen == [1, 2]
