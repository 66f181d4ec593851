"""Benchmarks behind `make bench`: each section is a module with `main(argv) -> None` that
prints its figures. Figures are ratios measured within one run (ours against the limit
or against a baseline on the same workload), because these machines are noisy."""
