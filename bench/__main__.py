"""`python -m bench [SECTION ...]`: run the named sections (all by default) in order."""

from __future__ import annotations

import importlib
import sys

# section name -> module whose main(argv) prints that section's figures
SECTIONS: dict[str, str] = {
    "throughput": "bench.throughput",
    "dedup": "bench.dedup",
    "metrics": "bench.metrics",
    "concurrency": "bench.concurrency",
    "providers": "bench.providers",
    "hangs": "bench.hangs",
    "cpu": "bench.cpu",
}


def main(argv: list[str]) -> int:
    names = argv or list(SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"\n== {name} ==", flush=True)
        importlib.import_module(SECTIONS[name]).main([])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
