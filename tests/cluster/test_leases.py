"""The division of each key among a cluster run's processes (`service/cluster/leases.py`),
fed `LimiterState`s as the workers report them: the leases of a key sum to 1, follow what each
process took (requests for the RPM part, tokens for the TPM part) and what it has waiting, and
a process gone from the holders is forgotten."""

from __future__ import annotations

import pytest

from llm import LimiterState
from service.cluster.leases import Lease, LeaseBoard


def state(
    taken_requests: int = 0, taken_tokens: int = 0, waiting: int = 0, key_rpm: int | None = None
) -> LimiterState:
    return LimiterState(
        in_flight=0,
        concurrency=32,
        remaining_requests=None,
        remaining_tokens=None,
        cooldown_s=0.0,
        waiting=waiting,
        taken_requests=taken_requests,
        taken_tokens=taken_tokens,
        key_rpm=key_rpm,
    )


def assert_whole(leases: dict[str, dict[str, Lease]], key: str) -> None:
    """The leases of `key` cover it exactly, each part a fraction of it."""
    parts = [held[key] for held in leases.values() if key in held]
    for part in parts:
        assert 0 < part.requests <= 1 and 0 < part.tokens <= 1
    assert sum(part.requests for part in parts) == pytest.approx(1)
    assert sum(part.tokens for part in parts) == pytest.approx(1)


def test_the_leases_of_a_key_sum_to_one_whatever_each_process_takes() -> None:
    board = LeaseBoard()
    taken = {"driver": 0, "0": 0, "1": 0, "2": 0}
    for round_ in range(12):
        for index, process in enumerate(taken):
            taken[process] += (round_ * 7 + index * 13) % 40  # uneven, changing use
        holders = {
            process: {"gen": state(count, count * 900, waiting=(count + round_) % 5)}
            for process, count in taken.items()
        }
        leases = board.divide(holders)
        assert set(leases) == set(taken)
        assert_whole(leases, "gen")


def test_a_busy_process_gets_most_of_the_key_and_an_idle_one_regains_its_part_once_it_waits() -> None:
    board = LeaseBoard()
    board.divide({"busy": {"gen": state()}, "idle": {"gen": state()}})
    busy = 0
    for _ in range(6):  # the smoothing forgets the even start
        busy += 200
        leases = board.divide({"busy": {"gen": state(busy, busy * 1000)}, "idle": {"gen": state()}})
    assert leases["busy"]["gen"][0] > 0.95
    assert leases["busy"]["gen"][1] > 0.95
    assert 0 < leases["idle"]["gen"][0] < 0.05  # a sliver, to start again with
    assert 0 < leases["idle"]["gen"][1] < 0.05

    for _ in range(6):  # now both have as much to do: the idle one waits for as many as the busy takes
        busy += 200
        leases = board.divide(
            {"busy": {"gen": state(busy, busy * 1000)}, "idle": {"gen": state(waiting=200)}}
        )
    assert leases["idle"]["gen"][0] == pytest.approx(0.5, abs=0.05)
    assert leases["idle"]["gen"][1] == pytest.approx(0.5, abs=0.05)
    assert_whole(leases, "gen")


def test_the_tokens_part_follows_the_tokens_taken_not_the_requests() -> None:
    board = LeaseBoard()
    board.divide({"few_large": {"gen": state()}, "many_small": {"gen": state()}})
    large = small = (0, 0)
    for _ in range(8):
        large = (large[0] + 10, large[1] + 10 * 8000)  # 10 requests of 8,000 tokens a second
        small = (small[0] + 100, small[1] + 100 * 100)  # 100 of 100
        leases = board.divide({"few_large": {"gen": state(*large)}, "many_small": {"gen": state(*small)}})
    few_requests, most_tokens = leases["few_large"]["gen"][:2]
    many_requests, few_tokens = leases["many_small"]["gen"][:2]
    assert many_requests > 0.85 and few_requests < 0.15
    assert most_tokens > 0.85 and few_tokens < 0.15
    assert_whole(leases, "gen")


def test_a_process_gone_from_the_holders_is_forgotten() -> None:
    board = LeaseBoard()
    board.divide({"0": {"gen": state(0)}, "1": {"gen": state(0)}})
    leases = board.divide({"1": {"gen": state(50)}})  # worker 0 is lost
    assert set(leases) == {"1"}
    assert leases["1"]["gen"][:2] == pytest.approx((1.0, 1.0))
    # it comes back (its reports had stopped) with 1,000 requests taken: none of them since the
    # last division, whose figures are the first it is seen with again
    leases = board.divide({"0": {"gen": state(1000, 1000)}, "1": {"gen": state(100, 100)}})
    assert leases["0"]["gen"][0] < 0.5
    assert_whole(leases, "gen")


def test_a_replacement_holding_the_place_of_a_lost_worker_gets_no_negative_part() -> None:
    """A replacement worker reports under its slot's name with its own counts, from 0: fewer
    than its predecessor's. A count that went back is a new process, not negative use (which
    would give it a negative part and the others more than the whole key)."""
    board = LeaseBoard()
    board.divide({"0": {"gen": state(0)}, "1": {"gen": state(0)}})
    board.divide({"0": {"gen": state(5000, 5000)}, "1": {"gen": state(5000, 5000)}})
    leases = board.divide({"0": {"gen": state(3, 3)}, "1": {"gen": state(10_000, 10_000)}})
    assert_whole(leases, "gen")
    assert leases["1"]["gen"][0] > leases["0"]["gen"][0]


def test_keys_held_by_some_processes_are_divided_among_those() -> None:
    board = LeaseBoard()
    holders = {
        "driver": {"gen": state(), "embed embeddings": state()},  # its persona expansion, its dedup
        "0": {"gen": state(), "judge": state()},
        "1": {"gen": state(), "judge": state()},
    }
    leases = board.divide(holders)
    assert leases["driver"].keys() == {"gen", "embed embeddings"}
    assert leases["0"].keys() == leases["1"].keys() == {"gen", "judge"}
    assert leases["driver"]["embed embeddings"][:2] == pytest.approx((1.0, 1.0))
    assert leases["0"]["judge"][:2] == pytest.approx((0.5, 0.5))
    assert leases["driver"]["gen"][:2] == pytest.approx((1 / 3, 1 / 3))
    for key in ("gen", "judge", "embed embeddings"):
        assert_whole(leases, key)


def test_a_limit_one_process_learned_goes_to_every_holder_of_the_key() -> None:
    board = LeaseBoard()
    leases = board.divide(
        {"driver": {"gen": state(5, key_rpm=1200)}, "0": {"gen": state()}, "1": {"gen": state()}}
    )
    assert {held["gen"].rpm for held in leases.values()} == {1200}
    assert {held["gen"].tpm for held in leases.values()} == {None}  # nobody knows a TPM limit
