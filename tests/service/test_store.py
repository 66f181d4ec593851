"""The SQLite store and the derived output files: exactly N accepted, surplus kept for a
larger run, cursor only moves forward, torn output lines are repaired from the store."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from service.export import OutputWriter
from service.rundir import RunDirectoryError
from service.store import Store
from tests.service.test_export import RECORD


def record(sid: str) -> dict:
    return {**RECORD, "id": sid}


def ids_per_shard(out: Path, stem: str) -> list[list[str]]:
    return [
        [orjson.loads(line)["id"] for line in p.read_bytes().splitlines()]
        for p in sorted(out.glob(f"{stem}-*.jsonl"))
    ]


def admit(store: Store, n: int) -> list[str]:
    ids = [f"s{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        store.admit(sid, i, f"f:{i}", f"persona {i}", {}, f"h{i}", bytes(8))
    return ids


def test_exactly_n_accepted_surplus_promoted_later(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    ids = admit(store, 5)
    orders = [store.accept(sid, {"id": sid}, [], target=3) for sid in ids[:4]]
    assert orders == [1, 2, 3, None]
    assert store.state_counts() == {"accepted": 3, "surplus": 1, "running": 1}
    assert [p.id for p in store.pending()] == ["s4"]
    assert store.promote_surplus(target=10) == 1
    assert store.accepted_count() == 4
    store.close()


def test_cursor_only_moves_forward(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    assert store.cursor() == -1
    store.reject_input(7, "malformed", "malformed", {"kind": "malformed"})
    store.reject_input(3, "duplicate", "persona_duplicate", {"kind": "duplicate"})
    assert store.cursor() == 7
    store.close()


def test_torn_output_is_repaired_from_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite")
    for sid in admit(store, 5):
        store.accept(sid, record(sid), [], target=5)
    store.reject_input(9, "malformed", "malformed", {"kind": "malformed", "source": "f:9"})
    shard = tmp_path / "samples-00000.jsonl"
    lines = [orjson.dumps(record(sid)) for sid in ("s0", "s1", "s2")]
    shard.write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + lines[2][:30])  # killed mid-write
    (tmp_path / "train-00000.jsonl").write_bytes(b'{"id":"s0","pers')  # killed mid-write
    writer = OutputWriter(tmp_path, shard_size=2)
    writer.sync(store)
    writer.close()
    expected = [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert ids_per_shard(tmp_path, "samples") == ids_per_shard(tmp_path, "train") == expected
    assert (tmp_path / "rejects.jsonl").read_text() == '{"kind":"malformed","source":"f:9"}\n'
    store.close()


def test_output_ahead_of_the_store_is_cut_back_to_it(tmp_path: Path) -> None:
    """The other direction: files holding lines the store lost (its last commits, to a power
    cut) are cut back to the store, which later re-accepts those samples from its answers."""
    store = Store(tmp_path / "state.sqlite")
    for sid in admit(store, 3):
        store.accept(sid, record(sid), [], target=3)
    line = {sid: orjson.dumps(record(sid)) + b"\n" for sid in ("s0", "s1", "s2", "lost", "lost2")}
    (tmp_path / "samples-00000.jsonl").write_bytes(line["s0"] + line["s1"])
    (tmp_path / "samples-00001.jsonl").write_bytes(line["s2"] + line["lost"])
    (tmp_path / "samples-00002.jsonl").write_bytes(line["lost2"] + b'{"id":"lo')
    (tmp_path / "rejects.jsonl").write_bytes(b'{"kind":"lost"}\n')
    writer = OutputWriter(tmp_path, shard_size=2)
    writer.sync(store)
    writer.close()
    assert ids_per_shard(tmp_path, "samples") == ids_per_shard(tmp_path, "train") == [["s0", "s1"], ["s2"]]
    assert (tmp_path / "rejects.jsonl").read_bytes() == b""
    store.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_appending_is_one_line_naming_the_shard(tmp_path: Path) -> None:
    (tmp_path / "samples-00000.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    writer = OutputWriter(tmp_path, shard_size=10)
    writer.samples.append(b'{"id":"s0"}')  # buffered
    with pytest.raises(RunDirectoryError) as err:
        writer.close()
    assert str(err.value) == (
        f"{tmp_path / 'samples-00000.jsonl'}: No space left on device "
        "(nothing written so far is lost; fix this, then run the same command to resume)"
    )
