"""The stopping rule for a source that has dried up: fewer than `accepted` of the last
`personas` personas taken were accepted stops the run with exit status 4 and a line saying
what the window held and what to change; samples still in flight never count against it."""

from __future__ import annotations

from pathlib import Path

from service.config import AcceptanceFloor as FloorSettings
from service.floor import AcceptanceFloor
from tests.conftest import FAST_SIM, cli, simulator, write_config, write_personas

ALWAYS_FLAWED = {**FAST_SIM, "flaws": {"script_rate": 1.0, "retry_rate_factor": 1.0}}


def test_a_run_whose_samples_are_all_dropped_stops_at_the_floor(tmp_path: Path) -> None:
    personas = write_personas(tmp_path / "personas.txt", 100)
    with simulator(ALWAYS_FLAWED) as url:
        config = write_config(
            tmp_path / "config.yaml",
            {"sim": {"base_url": url}},
            "sim",
            run={"acceptance_floor": {"accepted": 1, "personas": 10}},
        )
        args = ["run", "--config", str(config), "-n", "20", "--personas", str(personas)]
        result = cli(*args, "--out", str(tmp_path / "run"))
    assert result.returncode == 4, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("result: ")]
    assert line.startswith(
        "result: stopped short: the persona source dried up: fewer than 1 accepted in the last 10 "
        "personas taken (10 dropped), at 0 / 20 accepted ("
    )
    assert line.endswith(
        "give other personas, or loosen dedup.persona.threshold / dedup.script.threshold if duplicates "
        "dominate, or lower run.acceptance_floor.accepted (0 turns this rule off); then run the same "
        "command to continue"
    )
    assert "personas read: " in line and "100 personas read" not in line  # it stopped taking them


def test_only_a_settled_prefix_is_judged() -> None:
    floor = AcceptanceFloor(FloorSettings(accepted=1, personas=3))
    for sample in ("a", "b", "c"):
        floor.taken(sample)
    floor.skipped("persona duplicates")  # settles behind the samples taken before it
    floor.settled("b", False, "dropped")
    floor.settled("c", False, "dropped")
    assert not floor.tripped()  # "a" is still in flight and may yet be accepted
    floor.settled("a", True, "accepted")  # settled in order: a, b, c, the duplicate
    assert floor.tripped()  # the last three: b, c and the duplicate
    assert (
        floor.message()
        == "fewer than 1 accepted in the last 3 personas taken (2 dropped, 1 persona duplicates)"
    )
    wide = AcceptanceFloor(FloorSettings(accepted=1, personas=4))
    for sample in ("a", "b", "c"):
        wide.taken(sample)
        wide.settled(sample, sample == "a", "accepted" if sample == "a" else "dropped")
    wide.skipped("persona duplicates")
    assert not wide.tripped()  # a is among the last four
    off = AcceptanceFloor(FloorSettings(accepted=0, personas=1))
    off.skipped("persona duplicates")
    assert not off.tripped()
