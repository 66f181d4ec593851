"""Command line: `agentrefine run` (also `python -m service run`).

`agentrefine report OUT` writes a run's report (also written at the end of every run);
`agentrefine export OUT --format F [--mask M]` writes its samples for a trainer.
Options map onto config keys (`-n` = run.n, `--personas` = personas.path, `--out` =
run.out, `--generator` = generator); `--set KEY=VALUE` overrides any key. Every user
error (configuration, input, endpoint refusal or outage, run directory) is one line on
stderr and exit status 2; an interrupted run exits 128 + the signal (130 for SIGINT, 143
for SIGTERM) and a run stopped by `run.max_cost_usd` exits 3; both resume with the same
command.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
from pathlib import Path

import uvloop

from metrics.report import write_report
from service.card import write_card
from service.config import ConfigError, load_config
from service.export import MASKS
from service.formats import FORMATS, main_export
from service.personas import PersonaInputError
from service.run import INTERRUPTED, Run, install_signal_handlers
from service.rundir import RunDirectoryBusy, RunDirectoryError
from service.store import Store
from service.summary import format_summary
from service.validate import validate_run
from workers.breaker import EndpointDown
from workers.llm import FatalEndpointError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentrefine", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate (or resume) a run until N samples are accepted")
    run.add_argument("-n", "--n", type=int, help="accepted samples wanted (run.n)")
    run.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    run.add_argument("--personas", help="persona file, JSONL or plain text (personas.path)")
    run.add_argument("--out", help="run directory: samples, rejects and state (run.out)")
    run.add_argument("--generator", help="endpoint name for every stage (generator)")
    run.add_argument("--strict", action="store_true", help="stop at the first malformed persona line")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    check = sub.add_parser("validate", help="check a run directory's samples against the data contract")
    check.add_argument("out", help="run directory")
    report = sub.add_parser("report", help="write OUT/report.md, OUT/report/*.png and the card OUT/README.md")
    report.add_argument("out", help="run directory")
    export = sub.add_parser("export", help="write a run's samples for a trainer (OUT/export/FORMAT[-MASK])")
    export.add_argument("out", help="run directory")
    export.add_argument("--format", required=True, choices=FORMATS, help="the trainer's form (README)")
    export.add_argument("--mask", default="paper", choices=MASKS, help="loss mask (paper Table 2 ablations)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.out)
    if args.command == "report":
        return _report(args.out)
    if args.command == "export":
        return main_export(args.out, args.format, args.mask)
    overrides = list(args.set)
    for key, value in (
        ("run.n", args.n),
        ("personas.path", args.personas),
        ("run.out", args.out),
        ("generator", args.generator),
        ("personas.strict", "true" if args.strict else None),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    try:
        config = load_config(args.config, overrides)
        raise_open_file_limit()  # a request in flight is a connection: thousands may be needed
        run = Run(config)
        summary = uvloop.run(_run(run))
    except (
        ConfigError,
        PersonaInputError,
        RunDirectoryBusy,
        RunDirectoryError,
        FatalEndpointError,
        EndpointDown,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
    print(format_summary(summary, config.run.out))
    if summary["result"].startswith("budget reached"):
        return 3
    return 128 + run.stop_signal if run.stop_signal is not None and summary["result"] == INTERRUPTED else 0


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (often 1024 of 1M):
    the limiters keep each endpoint's concurrency below what the soft limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _validate(out: str) -> int:
    report = validate_run(out)
    for problem in report.problems[:50]:
        print(problem)
    print(
        f"{report.samples} samples, {len(report.problems)} problems; assistant turns: "
        f"{report.trained_turns} trained, {report.masked_turns} masked as erroneous"
    )
    return 0 if report.ok and report.samples else 1


def _report(out: str) -> int:
    database = Path(out) / "state.sqlite"
    if not database.is_file():
        print(f"error: {out}: not a run directory (no state.sqlite)", file=sys.stderr)
        return 2
    store = Store(database)
    try:
        print(write_report(store, Path(out)))
        print(write_card(store, Path(out), store.get_meta("license") or "apache-2.0"))
    finally:
        store.close()
    return 0


async def _run(run: Run) -> dict:
    install_signal_handlers(run)
    return await run.execute()


if __name__ == "__main__":
    sys.exit(main())
