"""`make chaos`, scaled down: the crash loop (N=60, 3 SIGKILLs at seeded moments, resumed
each time) ends with exactly N unique valid samples, no stored answer is sent again, and
the requests sent twice are no more than were in flight at the kills; the fault storm
(every fault at once, on the embedded endpoint the service starts itself) ends with N
valid samples and the faults in its summary."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import crash_loop, fault_storm


def test_crash_loop_ends_with_exactly_n_unique_valid_samples(tmp_path: Path) -> None:
    report = crash_loop(tmp_path, n=60, kills=3, seed=0, max_delay_s=0.1)
    assert report.problems() == []
    assert len(report.kills) == 3 and report.attempts[-1].killed_at is None
    assert report.accepted == 60 and report.stored_then_resent == 0
    assert report.sent_twice <= report.in_flight_at_kills
    assert all(0 <= attempt.in_flight <= report.max_concurrency for attempt in report.kills)


def test_fault_storm_ends_with_n_valid_samples_and_counts_the_faults(tmp_path: Path) -> None:
    faults = {"p_5xx": 0.09, "p_reset": 0.06, "p_hang": 0.03, "p_truncated_body": 0.06, "hang_s": 30}
    summary, validation = fault_storm(tmp_path, n=30, faults=faults, timeout_s=2.0)
    requests = summary["this_process"]["requests"]
    assert summary["result"] == "target reached" and summary["accepted"] == 30
    assert validation.startswith("30 samples, 0 problems")
    assert requests["ok"] > 0 and sum(n for outcome, n in requests.items() if outcome != "ok") > 0
