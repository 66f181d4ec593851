"""Batch mode's plan, printed at the start of a run: how many rounds the rest of the target
should take, from the stages' attempts and the share of answers expected to pass their checks.

A round answers one request of every sample in flight: a script, or a trajectory. A sample is
accepted in its second round at best; a failed check costs it a round (a new script, or a
continued or new trajectory), and a sample whose attempts are spent is replaced by a new one
in the next round (admission keeps the target's need in flight). The expected number of
accepted samples after each round follows from that, with the samples in flight spread over
their states; the plan is the first round at which it reaches the target.
"""

from __future__ import annotations

from collections import defaultdict

from service.config import Config
from service.recorder import SampleCounts
from service.store import Store
from workers.pacing import needed_for_target

SCRIPT_PASS = 0.8  # the embedded default's script flaw rate is 0.2
TRAJECTORY_PASS = 0.65  # ... and its trajectory flaw rate 0.35
MAX_ROUNDS = 100


def expected_rounds(
    target: int,
    in_flight: int,
    script_attempts: int,
    trajectory_attempts: int,
    p_script: float,
    p_trajectory: float,
) -> int | None:
    """Rounds until `target` samples are expected to be accepted (None: not within MAX_ROUNDS)."""
    # state: (scripts used, trajectories used of the current script, waiting for: "s" or "t")
    states: dict[tuple[int, int, str], float] = {(0, 0, "s"): float(in_flight)}
    accepted = 0.0
    for round_ in range(1, MAX_ROUNDS + 1):
        after: dict[tuple[int, int, str], float] = defaultdict(float)
        dropped = 0.0
        for (scripts, trajectories, waiting), count in states.items():
            if waiting == "s":
                after[(scripts + 1, 0, "t")] += count * p_script
                fail = count * (1 - p_script)
                if scripts + 1 < script_attempts:
                    after[(scripts + 1, 0, "s")] += fail
                else:
                    dropped += fail
            else:
                accepted += count * p_trajectory
                fail = count * (1 - p_trajectory)
                if trajectories + 1 < trajectory_attempts:
                    after[(scripts, trajectories + 1, "t")] += fail
                elif scripts < script_attempts:
                    after[(scripts, 0, "s")] += fail
                else:
                    dropped += fail
        if accepted >= target - 1e-6:
            return round_
        after[(0, 0, "s")] += dropped  # replaced by new samples in the next round
        states = after
    return None


def batch_plan(config: Config, counts: SampleCounts, store: Store) -> str:
    """One line for the terminal: the rounds expected for the rest of the target."""
    left = counts.target - counts.accepted
    in_flight = needed_for_target(counts.target, counts.accepted, counts.finished)
    stages = config.stages
    rounds = expected_rounds(
        left,
        in_flight,
        stages.script.attempts,
        stages.trajectory.attempts,
        SCRIPT_PASS,
        TRAJECTORY_PASS,
    )
    resumed = len([b for b in store.batch_rows() if not b["status"].startswith("done:")])
    expected = f"about {rounds} rounds" if rounds is not None else f"more than {MAX_ROUNDS} rounds"
    return (
        f"batch mode: {left} samples to accept, {in_flight} in flight per round; {expected} expected "
        f"(if {SCRIPT_PASS:.0%} of scripts and {TRAJECTORY_PASS:.0%} of trajectories pass their checks)"
        + (f"; {resumed} batches of an earlier process resumed" if resumed else "")
    )
