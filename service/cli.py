"""Command line: `agentrefine run` (also `python -m service run`).

`agentrefine report OUT` writes a run's report (also written at the end of every run);
`agentrefine export OUT --format F [--mask M]` writes its samples for a trainer;
`agentrefine batches OUT [--cancel]` lists a batch-mode run's batches and their states, and
cancels those not finished.
`agentrefine diversity OUT [OTHER_OUT]` prints how diverse a run's accepted data is, or two
runs side by side, and draws their scripts on one map.
Options map onto config keys (`-n` = run.n, `--personas` = personas.path, `--out` =
run.out, `--generator` = generator, `--mode` = run.mode); `--set KEY=VALUE` overrides any key.

Exit status of `run`, with the summary's `result:` line saying why:
- 0: the target was reached;
- 2: a user error (configuration, input, endpoint refusal or outage, run directory, a
  resume that would mix settings), one line on stderr naming the place;
- 3: stopped by `run.max_cost_usd`;
- 4: stopped short of the target: the persona source ran out, or dried up
  (`run.acceptance_floor`); the result line says what became of the personas and what to change;
- 130 / 143: interrupted by SIGINT / SIGTERM (128 + the signal).
All but 2 resume with the same command. Lines printed from outside text (errors quoting a
provider or a path) have API keys redacted and control characters escaped.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import uvloop

from llm import EndpointDown, FatalEndpointError
from llm.limiter import raise_open_file_limit
from llm.redact import redact
from pipeline.sources import PersonaInputError
from service.batch_admin import cancel_batches, format_batches
from service.card import write_card
from service.cluster.pool import ClusterError
from service.compare import NotARunDirectory, main_diversity
from service.config import ConfigError, load_config
from service.export import MASKS
from service.formats import FORMATS, main_export
from service.logs import printable
from service.report import write_report
from service.resume import ResumeConflict
from service.run import Run, install_signal_handlers
from service.rundir import RESUME_HINT, RunDirectoryBusy, RunDirectoryError, file_mode, storage_error
from service.store import Store
from service.summary import format_summary
from service.validate import validate_run

EXIT_USER_ERROR = 2
EXIT_STATUS = {"target": 0, "budget": 3, "short": 4}  # "interrupted": 128 + the signal


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentrefine", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate (or resume) a run until N samples are accepted")
    run.add_argument("-n", "--n", type=int, help="accepted samples wanted (run.n)")
    run.add_argument("--config", default="config.yaml", help="config file (default: config.yaml)")
    run.add_argument("--personas", help="persona file, JSONL or plain text (personas.path)")
    run.add_argument("--out", help="run directory: samples, rejects and state (run.out)")
    run.add_argument("--generator", help="endpoint name for every stage (generator)")
    run.add_argument("--mode", choices=("online", "batch"), help="online, or batch: the Batch API (run.mode)")
    run.add_argument("--strict", action="store_true", help="stop at the first malformed persona line")
    run.add_argument(
        "--workers",
        type=int,
        help="the sample stages on K Ray workers ($RAY_ADDRESS: join it) (cluster.workers)",
    )
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="resume although KEY (a setting that shapes the data, e.g. personas.source) changed",
    )
    check = sub.add_parser("validate", help="check a run directory's samples against the data contract")
    check.add_argument("out", help="run directory")
    report = sub.add_parser("report", help="write OUT/report.md, OUT/report/*.png and the card OUT/README.md")
    report.add_argument("out", help="run directory")
    batches = sub.add_parser("batches", help="list a run's batches (batch mode) and their states; --cancel")
    batches.add_argument("out", help="run directory")
    batches.add_argument("--cancel", action="store_true", help="cancel the batches not yet finished")
    batches.add_argument("--config", default="config.yaml", help="config file (for --cancel: the endpoints)")
    export = sub.add_parser("export", help="write a run's samples for a trainer (OUT/export/FORMAT[-MASK])")
    export.add_argument("out", help="run directory")
    export.add_argument("--format", required=True, choices=FORMATS, help="the trainer's form (README)")
    export.add_argument("--mask", default="paper", choices=MASKS, help="loss mask (paper Table 2 ablations)")
    diversity = sub.add_parser(
        "diversity", help="how diverse a run's accepted samples are; two runs side by side"
    )
    diversity.add_argument("out", help="run directory")
    diversity.add_argument("other", nargs="?", help="a second run directory to compare with")
    diversity.add_argument("--png", help="where to draw the map (default: under OUT/report/)")
    diversity.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.out)
    if args.command == "report":
        return _report(args.out)
    if args.command == "batches":
        return _batches(args.out, args.cancel, args.config)
    if args.command == "export":
        return main_export(args.out, args.format, args.mask)
    if args.command == "diversity":
        return _diversity([args.out, *([args.other] if args.other else [])], args.png, args.json)
    options = [
        (option, key, value)
        for option, key, value in (
            ("-n", "run.n", args.n),
            ("--personas", "personas.path", args.personas),
            ("--out", "run.out", args.out),
            ("--generator", "generator", args.generator),
            ("--mode", "run.mode", args.mode),
            ("--strict", "personas.strict", True if args.strict else None),
            ("--workers", "cluster.workers", args.workers),
        )
        if value is not None
    ]
    out = args.out or ""
    try:
        config = load_config(args.config, args.set, options=options)
        out = config.run.out
        raise_open_file_limit()  # a request in flight is a connection: thousands may be needed
        run = Run(config, args.allow_change)
        summary = uvloop.run(_run(run))
    except (
        ConfigError,
        PersonaInputError,
        RunDirectoryBusy,
        RunDirectoryError,
        ResumeConflict,
        FatalEndpointError,
        EndpointDown,
        ClusterError,
    ) as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(f"{exc.filename or out}: {exc.strerror or exc} ({RESUME_HINT})")
    print(format_summary(summary, config.run.out))
    if run.ending.kind == "interrupted" and run.stop_signal is not None:
        return 128 + run.stop_signal
    return EXIT_STATUS[run.ending.kind]


def _error(message: str) -> int:
    print(f"error: {printable(redact(message))}", file=sys.stderr)
    return EXIT_USER_ERROR


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
        return _error(f"{out}: not a run directory (no state.sqlite)")
    with file_mode(database.stat().st_mode & 0o777):  # the report is as private as the store
        try:
            store = Store(database)
            try:
                print(write_report(store, Path(out)))
                print(write_card(store, Path(out), store.get_meta("license") or "apache-2.0"))
            finally:
                store.close()
        except RunDirectoryError as exc:
            return _error(str(exc))
        except sqlite3.Error as exc:
            return _error(str(storage_error(database, exc)))
    return 0


def _batches(out: str, cancel: bool, config_path: str) -> int:
    database = Path(out) / "state.sqlite"
    if not database.is_file():
        return _error(f"{out}: not a run directory (no state.sqlite)")
    try:
        if cancel:
            config = load_config(config_path, options=[("OUT", "run.out", out)])
            for line in uvloop.run(cancel_batches(config)):
                print(line)
        store = Store(database)
        try:
            print(format_batches(store.batch_rows()))
        finally:
            store.close()
    except (ConfigError, RunDirectoryBusy, FatalEndpointError) as exc:
        return _error(str(exc))
    except sqlite3.Error as exc:
        return _error(str(storage_error(database, exc)))
    return 0


def _diversity(outs: list[str], png: str | None, as_json: bool) -> int:
    try:
        text, drawn = main_diversity(outs, png, as_json)
    except (NotARunDirectory, RunDirectoryError) as exc:
        return _error(str(exc))
    print(text)
    if drawn is not None and not as_json:
        print(f"map: {drawn}")
    return 0


async def _run(run: Run) -> dict:
    install_signal_handlers(run)
    return await run.execute()


if __name__ == "__main__":
    sys.exit(main())
