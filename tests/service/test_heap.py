"""Freed heap memory goes back to the OS: RSS falls after `trim_heap` although the top of the
heap is still in use (so glibc's own trimming cannot release it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service import heap
from service.heap import HeapTrimmer, trim_heap


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not trim_heap(), reason="needs glibc's malloc_trim")
def test_freed_heap_below_a_live_chunk_is_given_back() -> None:
    chunks = [bytearray(100_000) for _ in range(2000)]  # ~200 MB in heap chunks (below mmap's 128 KiB)
    keep = bytearray(100_000)  # allocated last: the top of the heap stays in use
    before_free = rss_mib()
    del chunks
    after_free = rss_mib()
    assert trim_heap()
    after_trim = rss_mib()
    assert after_free > before_free - 50  # free() alone kept most of it
    assert after_trim < after_free - 100
    assert len(keep) == 100_000


@pytest.mark.skipif(not trim_heap(), reason="needs glibc's malloc_trim")
def test_the_trimmer_trims_every_interval_in_the_loop_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    malloc_trim = heap._MALLOC_TRIM
    assert malloc_trim is not None

    def counted(pad: int) -> int:  # glibc's own malloc_trim, counted
        trims.append(pad)
        return malloc_trim(pad)

    monkeypatch.setattr(heap, "_MALLOC_TRIM", counted)

    async def go() -> tuple[int, int]:
        trimmer = HeapTrimmer(interval_s=0.01)
        trimmer.start()
        while len(trims) < 3:  # it keeps trimming while started
            await asyncio.sleep(0.01)
        await trimmer.stop()
        stopped_at = len(trims)
        await asyncio.sleep(0.05)  # five intervals later: no more trims
        return stopped_at, len(trims)

    stopped_at, later = asyncio.run(asyncio.wait_for(go(), 30))
    assert stopped_at >= 3 and later == stopped_at and set(trims) == {0}
