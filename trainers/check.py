"""`make check-trainers`: do axolotl, TRL and LLaMA-Factory train exactly the tokens of the
assistant turns with `"train": true`, with no sample dropped or warned about?

For each trainer: a throw-away virtualenv (`.trainer-venvs/NAME`, reused while its pinned
requirements are unchanged) with the trainer from pip and `torch==2.13.0` (the CPU build on
disk); a small byte-level BPE tokenizer trained here on the exported text (no hub); then the
trainer's OWN data loading and tokenization (`probe_NAME.py`) on the samples of a run, in the
form `agentrefine export --format NAME` writes. The probe compares every trained label span
with the trained assistant messages of the training shards and reports drops and warnings. A
control run feeds the same probe the `erroneous-loss` export (every assistant turn trained):
the comparison must then fail for every sample, or the check itself proves nothing.

Usage: python -m trainers.check [--out RUN_DIR] [--n 50] [--trainers axolotl,trl,llamafactory]
Without --out it makes a run of N samples on the embedded endpoint first.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from service.formats import export_run

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TORCH = "torch==2.13.0"


@dataclass(frozen=True)
class Trainer:
    name: str
    requirements: tuple[str, ...]
    export: str  # the --format the trainer reads
    remove: tuple[str, ...] = ()  # packages the trainer pulls in that cannot load here (see README)
    stubs: tuple[str, ...] = ()  # modules imported unconditionally but never called for text SFT
    notes: list[str] = field(default_factory=list)


TRAINERS = {
    "axolotl": Trainer("axolotl", (TORCH, "axolotl==0.19.0"), "axolotl"),
    "trl": Trainer("trl", (TORCH, "trl==1.16.0"), "trl"),
    # llamafactory needs torchvision and torchaudio; pip resolves PyPI's builds, whose native
    # libraries do not load against the CPU torch 2.13.0 (torchvision 0.28.0: "operator
    # torchvision::nms does not exist"; torchaudio 2.11.1, the newest on PyPI: "Could not load
    # this library: .../_torchaudio.so"). Text SFT uses neither, but llamafactory.data imports
    # torchaudio at module level: the probe removes both and puts an empty module in its place.
    "llamafactory": Trainer(
        "llamafactory",
        (TORCH, "llamafactory==0.9.5"),
        "llamafactory",
        remove=("torchvision", "torchaudio"),
        stubs=("torchaudio",),
    ),
}
# Warnings about the configuration or the machine, not about samples; anything else fails.
NOT_ABOUT_SAMPLES = re.compile(
    r"deprecated|mixed precision|posthog|telemetry|Retrying|NameResolution|VRAM|preprocess your dataset",
    re.IGNORECASE,
)
PROBE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "AXOLOTL_IS_PREPROCESS": "1",
    "DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
}


def venv_for(trainer: Trainer, root: Path) -> Path:
    """The trainer's virtualenv, created (or re-created) when its requirements changed."""
    venv = root / trainer.name
    stamp = venv / ".check-trainers-stamp"
    wanted = "\n".join([*trainer.requirements, *(f"-{p}" for p in trainer.remove)])
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    install = subprocess.run([*pip, *trainer.requirements], capture_output=True, text=True)
    if install.returncode != 0:
        raise RuntimeError(f"{trainer.name}: pip install failed:\n{install.stderr[-3000:]}")
    if trainer.remove:
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *trainer.remove])
    stamp.write_text(wanted)
    return venv


def probe(trainer: Trainer, venv: Path, export: Path, shards: Path, work: Path) -> dict:
    env = {**os.environ, **PROBE_ENV}
    if trainer.stubs:
        stub_dir = work / "stubs"
        for module in trainer.stubs:
            (stub_dir / module).mkdir(parents=True, exist_ok=True)
            (stub_dir / module / "__init__.py").write_text('"""Never called by text-only SFT."""\n')
        env["PYTHONPATH"] = str(stub_dir)
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            str(HERE / f"probe_{trainer.name}.py"),
            str(export),
            str(shards),
            str(work),
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"trainer"')]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{trainer.name}: the probe failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def verdict(report: dict, samples: int, rows: int) -> list[str]:
    problems = list(report["problems"])
    if report["rows_out"] != rows or report["rows_in"] != rows:
        problems.append(
            f"rows: {rows} exported, {report['rows_in']} loaded, {report['rows_out']} after tokenization"
        )
    if report["samples"] != samples:
        problems.append(f"samples: {samples} exported, {report['samples']} trained")
    problems += [f"warning: {w}" for w in report["warnings"] if not NOT_ABOUT_SAMPLES.search(w)]
    return problems


def make_run(out: Path, n: int) -> None:
    args = [
        sys.executable,
        "-m",
        "service",
        "run",
        "-n",
        str(n),
        "--out",
        str(out),
        "--set",
        "run.report=false",
    ]
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, help="an existing run directory (default: a new run of --n samples)"
    )
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--venvs", type=Path, default=ROOT / ".trainer-venvs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="check-trainers-") as tmp:
        out = args.out or Path(tmp) / "run"
        if args.out is None:
            print(f"making a run of {args.n} samples on the embedded endpoint ...", flush=True)
            make_run(out, args.n)
        failed = False
        for name in args.trainers.split(","):
            trainer = TRAINERS[name]
            exported = export_run(out, trainer.export)
            print(f"{name}: installing / reusing {args.venvs / name} ...", flush=True)
            try:
                venv = venv_for(trainer, args.venvs)
                work = Path(tmp) / name
                work.mkdir()
                report = probe(trainer, venv, exported.directory, out, work)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print(f"{name}: FAILED: {exc}")
                failed = True
                continue
            problems = verdict(report, exported.samples, exported.rows)
            # control: the same check on the every-turn-trained export must flag every sample
            control_dir = Path(tmp) / f"{name}-control"
            control_export = export_run(out, trainer.export, "erroneous-loss", dest=control_dir)
            (control_dir / "work").mkdir()
            control = probe(trainer, venv, control_export.directory, out, control_dir / "work")
            if len(control["problems"]) != exported.samples:
                problems.append(
                    f"control: the erroneous-loss export should mismatch in all {exported.samples} samples, "
                    f"the check flagged {len(control['problems'])}"
                )
            failed |= bool(problems)
            print(
                f"{name}: {report['trainer']} (datasets {report['datasets']}): {exported.samples} samples in "
                f"{exported.rows} rows, {report['rows_out']} rows tokenized, trained tokens = the "
                f"train:true assistant turns in {report['samples'] - len(report['problems'])} of "
                f"{exported.samples} samples (control: masked turns caught in {len(control['problems'])}); "
                + ("OK" if not problems else f"{len(problems)} PROBLEMS")
            )
            for line in problems[:10]:
                print(f"  - {line}")
            other = [w for w in report["warnings"] if NOT_ABOUT_SAMPLES.search(w)]
            for line in sorted(set(other))[:5]:
                print(f"  (warning not about samples: {line[:160]})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
