"""Freed heap memory goes back to the OS: RSS falls after `trim_heap` although the top of the
heap is still in use (so glibc's own trimming cannot release it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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


def test_the_trimmer_runs_in_the_loop_and_stops() -> None:
    async def go() -> None:
        trimmer = HeapTrimmer(interval_s=0.01)
        trimmer.start()
        await asyncio.sleep(0.05)
        await trimmer.stop()

    asyncio.run(go())
