"""Cluster runs (`--workers K`) through the CLI, joined to one local Ray cluster: exactly N
valid samples from both workers with one store; a worker SIGKILLed mid-run loses nothing,
accepts nothing twice and pays for no stored answer again; a killed driver resumes with the
same command; one dedup across the workers; one key's RPM shared by the workers; a graceful
stop; and a run without workers never imports Ray."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from service.validate import validate_run
from tests.conftest import FAST_SIM, ROOT, cli, read_jsonl, sim_stats, simulator, write_config, write_personas
from tests.loopback import Loopback, loopback

N = 200
SLOW_SIM = {**FAST_SIM, "latency_median_s": 0.3}  # a run long enough to kill something in


def sim_config(tmp_path: Path, base_url: str) -> Path:
    """A config whose one endpoint is at `base_url`, with room for two workers' samples."""
    return write_config(
        tmp_path / "config.yaml", {"sim": {"base_url": base_url}}, "sim", run={"max_in_flight": 64}
    )


def run_args(config: Path, out: Path, n: int, *extra: str) -> list[str]:
    return ["run", "--config", str(config), "-n", str(n), "--out", str(out), "--workers", "2", *extra]


def start(args: list[str], address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_ADDRESS": address},
    )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def stored_keys(out: Path) -> set[str]:
    try:
        with sqlite3.connect(f"file:{out / 'state.sqlite'}?mode=ro", uri=True) as db:
            return {key for (key,) in db.execute("SELECT key FROM responses")}
    except sqlite3.Error:  # not created yet
        return set()


def started_until(
    tmp_path: Path, url: str, address: str, n: int, stored: int
) -> tuple[subprocess.Popen[str], list[str], Path]:
    """A run of `n` on two workers against the endpoint at `url`, once `stored` answers are in
    its store: the process, its arguments (to run it again) and its run directory."""
    out = tmp_path / "run"
    args = run_args(sim_config(tmp_path, url), out, n)
    proc = start(args, address)
    wait_until(lambda: len(stored_keys(out)) >= stored, proc)
    return proc, args, out


def times_received(url: str, keys: set[str]) -> dict[str, int]:
    """How often the endpoint has been asked each of these questions (by the store's keys)."""
    return {key: count for key, count in sim_stats(url)["received"].items() if key in keys}


def worker_pid(out: Path, worker: int) -> int | None:
    log = out / "workers" / f"worker-{worker}.log"
    pids = [json.loads(line)["pid"] for line in log.read_text().splitlines() if '"worker_started"' in line]
    return pids[-1] if pids else None


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def accepted_samples(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(sorted(out.glob("samples-*.jsonl")))


def assert_exactly_n_distinct(out: Path, n: int) -> None:
    samples = accepted_samples(out)
    assert len(samples) == n
    assert len({s["id"] for s in samples}) == n  # no sample accepted twice
    assert len({s["persona"] for s in samples}) == n  # no persona admitted twice
    assert validate_run(out).ok


def log_events(out: Path, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in (out / "run.log").read_text().splitlines())
    return [line for line in lines if line["event"] == event]


def test_two_workers_accept_exactly_n_into_one_store(ray_cluster: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with simulator(FAST_SIM) as url:
        config = sim_config(tmp_path, url)
        result = cli(*run_args(config, out, N), env={"RAY_ADDRESS": ray_cluster})
        stats = sim_stats(url)

    assert result.returncode == 0, result.stderr
    assert f"accepted: {N} / {N}" in result.stdout
    assert_exactly_n_distinct(out, N)
    cluster = summary(out)["cluster"]
    assert cluster["workers"] == 2 and cluster["cluster"] == "joined"
    assert min(cluster["samples_by_worker"]) > 0  # both workers walked samples
    assert cluster["answers_sent_again"] == 0
    assert set(stats["answered"]) == stored_keys(out)  # every answer the endpoint gave is in the one store
    by_worker = {line["worker"] for line in log_events(out, "sample_accepted")}
    assert by_worker == {0, 1}
    # the driver's /metrics (written at the end) has the run's series and each worker's
    metrics = (out / "metrics.prom").read_text()
    answers = {
        worker: float(value)
        for worker, value in re.findall(r'agentrefine_worker_answers_total\{worker="(\d)"\} (\S+)', metrics)
    }
    assert set(answers) == {"0", "1"} and all(answers.values())
    with sqlite3.connect(out / "state.sqlite") as db:  # the persona expansion asks from the driver
        (on_workers,) = db.execute("SELECT COUNT(*) FROM responses WHERE sample_id IS NOT NULL").fetchone()
    assert sum(answers.values()) == on_workers


def test_a_worker_killed_mid_run_loses_nothing_and_pays_no_stored_answer_again(
    ray_cluster: str, tmp_path: Path
) -> None:
    with simulator(SLOW_SIM) as url:
        proc, _, out = started_until(tmp_path, url, ray_cluster, N, stored=150)
        pid = worker_pid(out, 0)
        assert pid is not None
        kept = stored_keys(out)  # stored before the kill, then how often the endpoint had them
        seen = times_received(url, kept)
        os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
        final = sim_stats(url)["received"]

    assert proc.returncode == 0, stderr
    assert "worker 0 lost" in stderr
    assert_exactly_n_distinct(out, N)
    cluster = summary(out)["cluster"]
    assert cluster["workers_replaced"] == 1
    assert cluster["answers_sent_again"] == 0
    assert summary(out)["this_process"]["answers_replayed_from_store"] > 0  # the lost samples' answers
    assert [key for key in kept if final[key] != seen[key]] == []  # no stored answer was asked again


def test_a_killed_driver_resumes_with_the_same_command(ray_cluster: str, tmp_path: Path) -> None:
    with simulator(SLOW_SIM) as url:
        proc, args, out = started_until(tmp_path, url, ray_cluster, 120, stored=100)
        proc.kill()
        proc.communicate()
        kept = stored_keys(out)
        seen = times_received(url, kept)
        resumed = cli(*args, env={"RAY_ADDRESS": ray_cluster})
        final = sim_stats(url)["received"]

    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_n_distinct(out, 120)
    assert [key for key in kept if final[key] != seen[key]] == []
    assert summary(out)["cluster"]["answers_sent_again"] == 0


TWINS = 8


def test_one_dedup_across_workers(ray_cluster: str, tmp_path: Path) -> None:
    """Planted twins: personas unlike each other whose script requests the endpoint sees as
    the same question (the loopback rewrites the twin's persona), so their scripts are the
    same. Each pair is caught once, wherever its two samples ran."""
    personas = write_personas(tmp_path / "personas.txt", 60)
    lines = personas.read_text().splitlines()
    twins = {lines[31 + i]: lines[i] for i in range(TWINS)}  # twin -> original (odd: dealt alternately)

    async def as_twin(server: Loopback, request: web.Request, body: bytes) -> web.StreamResponse:
        question = orjson.loads(body)
        question.pop("seed", None)  # a sample's own seed would make the questions differ
        text = orjson.dumps(question).decode()
        for twin, original in twins.items():
            text = text.replace(twin, original)
        return await server.forward(request, text.encode(), url)

    out = tmp_path / "run"
    with simulator(FAST_SIM) as url, loopback(as_twin) as proxy:
        config = sim_config(tmp_path, proxy.url)
        result = cli(
            *run_args(config, out, 40, "--personas", str(personas)), env={"RAY_ADDRESS": ray_cluster}
        )

    assert result.returncode == 0, result.stderr
    duplicates = [r for r in read_jsonl([out / "rejects.jsonl"]) if r.get("rule") == "script_duplicate"]
    pairs = {frozenset((twin, original)) for twin, original in twins.items()}
    assert len(duplicates) == TWINS  # one of each pair, and nothing else
    worker_of = {line["sample_id"]: line["worker"] for line in log_events(out, "sample_accepted")}
    worker_of |= {line["sample_id"]: line["worker"] for line in log_events(out, "sample_duplicate")}
    crossed = [r for r in duplicates if worker_of[r["id"]] != worker_of[r["duplicate_of"]]]
    assert crossed  # pairs whose halves ran on different workers were caught too
    persona_of = {s["id"]: s["persona"] for s in accepted_samples(out)}
    for record in duplicates:
        pair = {record["persona"], persona_of[record["duplicate_of"]]}
        assert frozenset(pair) in pairs


RPM = 1200


def test_two_workers_share_one_keys_rpm(ray_cluster: str, tmp_path: Path) -> None:
    """An endpoint limited to RPM requests a minute (enforced over 1 s, starting empty): the
    two workers together stay within it, with at most 1% answered 429."""
    limited = {**FAST_SIM, "rpm": RPM, "burst_s": 1.0, "start_full": False}
    out = tmp_path / "run"
    with (
        simulator(limited) as url,
        loopback(lambda server, request, body: server.forward(request, body, url)) as proxy,
    ):
        endpoint = {"base_url": proxy.url, "limits": {"max_concurrency": 32, "rpm": RPM}}
        config = write_config(tmp_path / "config.yaml", {"sim": endpoint}, "sim", run={"max_in_flight": 64})
        result = cli(*run_args(config, out, 60), env={"RAY_ADDRESS": ray_cluster})
        stats = sim_stats(url)

    assert result.returncode == 0, result.stderr
    arrivals = proxy.arrivals
    per_minute = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60
    assert per_minute <= RPM * 1.01
    refused = stats["by_status"].get("429", 0)
    assert refused <= 0.01 * stats["requests"]


def test_sigterm_stops_the_workers_gracefully_and_resumes(ray_cluster: str, tmp_path: Path) -> None:
    with simulator(SLOW_SIM) as url:
        proc, args, out = started_until(tmp_path, url, ray_cluster, 80, stored=40)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        stopped = sim_stats(url)
        assert proc.returncode == 128 + signal.SIGTERM, stderr
        assert "result: interrupted (run the same command to resume)" in stdout
        assert set(stopped["answered"]) == stored_keys(out)  # what the workers were told was stored
        resumed = cli(*args, env={"RAY_ADDRESS": ray_cluster})
    assert resumed.returncode == 0, resumed.stderr
    assert_exactly_n_distinct(out, 80)


def test_a_worker_that_cannot_start_is_one_line_and_leaves_nothing_running(
    ray_cluster: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "workers").write_text("")  # a file where the workers make the folder of their logs
    with simulator(FAST_SIM) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        code = (
            "import sys; from service.cli import main; "  # Ray imported by the run (its token mode)
            f"status = main({run_args(config, out, 5)!r}); "
            "import ray; print('cluster left:', not ray.is_initialized()); sys.exit(status)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "RAY_ADDRESS": ray_cluster},
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: cluster: worker \d could not start: \[Errno 17\] File exists: .*'", line)
    assert result.stdout.strip().endswith("cluster left: True")  # and its workers stopped with it


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` from the project root: the CLI with the interpreter's state in view."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_a_run_without_workers_never_imports_ray(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with simulator(FAST_SIM) as url:
        config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": url}}, "sim")
        code = (
            "import sys, uvloop; from service.cli import main; "
            f"status = main(['run', '--config', {str(config)!r}, '-n', '5', '--out', {str(out)!r}]); "
            "print('ray' in sys.modules); sys.exit(status)"
        )
        result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("False")


def test_without_ray_installed_the_cluster_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": "http://127.0.0.1:9/v1"}}, "sim")
    code = (
        "import sys; sys.modules['ray'] = None; from service.cli import main; "
        f"sys.exit(main(['run', '--config', {str(config)!r}, '-n', '5', '--out', {str(tmp_path / 'run')!r},"
        " '--workers', '2']))"
    )
    result = run_python(code)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cluster.workers: running on Ray workers needs Ray, the optional extra `cluster`: "
        "`make run WORKERS=K` installs it (or pip install 'agentrefine-synth[cluster]')"
    ]


def test_a_cluster_address_nothing_answers_at_is_one_line_at_once(tmp_path: Path) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    config = write_config(tmp_path / "config.yaml", {"sim": {"base_url": "http://127.0.0.1:9/v1"}}, "sim")
    result = cli(*run_args(config, tmp_path / "run", 5), env={"RAY_ADDRESS": address}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cluster: nothing answers at the Ray cluster address {address} (Connection refused); "
        "check $RAY_ADDRESS or cluster.address (the head's `ray start --head` prints it)"
    ]


def test_a_worker_the_cluster_has_no_cpu_for_is_one_line_in_time(ray_cluster: str, tmp_path: Path) -> None:
    """The shared cluster has 4 CPUs and a joined run's worker asks for one: a fifth waits for a
    place Ray would never find; the run stops at `cluster.start_timeout_s` in one line."""
    with simulator(FAST_SIM) as url:
        config = sim_config(tmp_path, url)
        args = run_args(config, tmp_path / "run", 5)
        args[args.index("--workers") + 1] = "5"
        result = cli(
            *args, "--set", "cluster.start_timeout_s=5", env={"RAY_ADDRESS": ray_cluster}, timeout=120
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"error: cluster: worker \d could not start: not started within 5 s: the cluster has no free CPU "
        r"for it .*\(cluster\.start_timeout_s waits longer\)",
        lines[0],
    )
