"""`python -m bench [--quick] [SECTION ...]`: run the named sections (all by default) in order.

A section is a module whose `main(argv: list[str]) -> int | None` prints its figures (a
non-zero return means its own checks failed). `--quick` is passed on to each section in
`argv`: the section then runs a scaled-down version that takes seconds, with the same
figures printed (not comparable to the full ones). The test suite runs every section that
way (tests/bench/test_bench.py), so the benches cannot rot. To add a section: add it to SECTIONS,
give its `main` a quick mode, and give tests/bench/test_bench.py the figures to look for.
`make bench` runs them all (`SECTIONS="a b"` to pick some, `QUICK=1` for the quick versions).
"""

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
    "chaos": "bench.chaos",
    "cluster": "bench.cluster",
}
QUICK = "--quick"


def main(argv: list[str]) -> int:
    options = [arg for arg in argv if arg == QUICK]
    names = [arg for arg in argv if arg != QUICK] or list(SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n== {name}{' (quick)' if options else ''} ==", flush=True)
        if importlib.import_module(SECTIONS[name]).main(options):
            failed.append(name)
    if failed:
        print(f"bench: checks failed in {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
