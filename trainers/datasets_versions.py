"""`make check-datasets OUT=run_dir`: do the run's training shards load in `datasets` 2.21,
3.2 and the current release? Each version goes into its own throw-away venv
(`.trainer-venvs/datasets-VERSION`) and loads `train-*.jsonl` with `load_dataset("json")`, as
a trainer does, and the run directory itself (`load_dataset(OUT)`, which reads the dataset
card's `configs`); the audit records (`samples-*.jsonl`) are loaded too, for comparison: their
script and meta objects have keys that differ per sample.

Usage: python -m trainers.datasets_versions OUT [--versions 2.21.0,3.2.0,current]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# datasets 2.21 predates pyarrow 21 (which dropped PyExtensionType) and numpy 2's wheels for it
EXTRA = {"2.21.0": ("pyarrow<21", "numpy<2"), "3.2.0": ("pyarrow<21",)}
LOAD = r"""
import json, sys, glob, warnings
warnings.simplefilter("ignore")
import datasets
out = {"datasets": datasets.__version__}
for name, pattern in (("train", "train-[0-9]*.jsonl"), ("audit", "samples-[0-9]*.jsonl")):
    files = sorted(glob.glob(sys.argv[1] + "/" + pattern))
    try:
        ds = datasets.load_dataset("json", data_files=files, split="train")
        out[name] = {"rows": len(ds), "features": str(ds.features)[:300]}
    except Exception as exc:
        cause = exc.__cause__ or exc
        out[name] = {"error": f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}"}
try:  # the run directory itself: its README.md names train-* as the default config
    out["directory"] = {"rows": len(datasets.load_dataset(sys.argv[1], split="train"))}
except Exception as exc:
    out["directory"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
print(json.dumps(out))
"""


def venv_for(version: str, root: Path) -> Path:
    venv = root / f"datasets-{version}"
    spec = ["datasets" if version == "current" else f"datasets=={version}", *EXTRA.get(version, ())]
    stamp = venv / ".stamp"
    if stamp.is_file() and stamp.read_text() == " ".join(spec):
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *spec], capture_output=True, text=True
    )
    if install.returncode != 0:
        raise SystemExit(f"datasets {version}: pip install failed:\n{install.stderr[-2000:]}")
    stamp.write_text(" ".join(spec))
    return venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--versions", default="2.21.0,3.2.0,current")
    parser.add_argument("--venvs", type=Path, default=ROOT / ".trainer-venvs")
    args = parser.parse_args(argv)
    shards = sorted(args.out.glob("train-[0-9]*.jsonl"))
    lines = sum(p.read_bytes().count(b"\n") for p in shards)
    print(f"{args.out}: {len(shards)} training shard(s), {lines} samples")
    failed = False
    for version in args.versions.split(","):
        venv = venv_for(version, args.venvs)
        run = subprocess.run(
            [str(venv / "bin" / "python"), "-c", LOAD, str(args.out.resolve())],
            capture_output=True,
            text=True,
            env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
        if run.returncode != 0:
            print(f"datasets {version}: FAILED to run: {run.stderr[-500:]}")
            failed = True
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        train, audit, directory = result["train"], result["audit"], result["directory"]
        ok = train.get("rows") == lines and directory.get("rows") == lines
        failed |= not ok
        print(
            f"datasets {result['datasets']}: training shards "
            + (
                f"loaded, {train['rows']} rows, features {train['features']}"
                if "rows" in train
                else train["error"]
            )
            + ("" if ok else "  <-- FAILED")
        )
        print(
            f"    load_dataset({str(args.out)!r}) (the card's default config): "
            + (f"{directory['rows']} rows" if "rows" in directory else directory["error"])
        )
        print(
            "    audit records (samples-*, not for training): "
            + (f"loaded, {audit['rows']} rows" if "rows" in audit else audit["error"])
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
