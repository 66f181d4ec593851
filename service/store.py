"""The run's job store (SQLite): the single source of truth for resuming a run.

It holds
- every completed LLM response, keyed by the hash of the request that produced it, so a
  resumed run replays answers instead of paying for them again;
- one row per admitted persona (a *sample*) with its state: `running`, `accepted`
  (with its acceptance order 1..N and exported record), `surplus` (accepted after the
  target was met; kept for a later, larger run), `dropped` or `failed`;
- every reject (dropped samples, duplicate and malformed personas) in write order;
- the judge stage's verdict on each DM turn it judged (`judgements`: the DM's place/logic
  flags beside the judge's; NULL where it gave no readable answer);
- every item kept by dedup (a persona, a script) with its digest and embedding, written in
  the same transaction that admits it, so the dedup index is rebuilt exactly on resume;
- the persona source cursor: how far the source has been consumed (every position at or
  below it; a source whose items come out of order also has some consumed above it: the
  positions of admitted samples and of rejected input, `consumed_after`);
- for the report and the budget: each answer's stage, sample, latency and cost (priced when
  it was paid; a batch answer also at its online list price) and each accepted sample's
  acceptance time;
- in batch mode, the journal of the batches (`llm.BatchJournal`): each input file with its
  requests (custom_id -> answer key) before its batch is created, then the batch id and its
  status, so a resumed run polls the batches it created instead of creating them again.

All writes are single short transactions in WAL mode, so a SIGKILL at any moment leaves
a consistent database: each row is either fully there or absent. The output files are
derived from these tables (see `export.py`) and can always be rebuilt from them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from llm import Answer, BatchRecord
from llm.redact import redact_bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    content TEXT NOT NULL,
    finish_reason TEXT,
    usage BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    source TEXT NOT NULL,
    persona TEXT NOT NULL,
    persona_meta BLOB,
    norm_hash TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    accepted_seq INTEGER UNIQUE,
    rule TEXT,
    failures TEXT NOT NULL DEFAULT '',
    record BLOB,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_state ON samples(state);
CREATE TABLE IF NOT EXISTS dedup_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    digest TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    file_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    batch_id TEXT,
    round INTEGER NOT NULL,
    status TEXT NOT NULL,
    requests INTEGER NOT NULL,
    committed_usd REAL NOT NULL,
    counts BLOB,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    file_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    stage TEXT NOT NULL,
    PRIMARY KEY (file_id, custom_id)
);
CREATE TABLE IF NOT EXISTS judgements (
    sample_id TEXT NOT NULL,
    turn INTEGER NOT NULL,
    dm_place INTEGER NOT NULL,
    dm_logic INTEGER NOT NULL,
    judge_place INTEGER,
    judge_logic INTEGER,
    reason TEXT NOT NULL,
    action TEXT NOT NULL,
    observation TEXT NOT NULL,
    PRIMARY KEY (sample_id, turn)
);
CREATE TABLE IF NOT EXISTS rejects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    rule TEXT NOT NULL,
    record BLOB NOT NULL
);
"""
# How responses are keyed (llm/client.py): the request body without max_tokens and the
# stream keys. A store without this mark that holds answers keyed them with max_tokens.
KEY_SCHEME = "question"
# Columns added after the first release: created here on new stores and added to old ones.
ADDED_COLUMNS = {
    "responses": {
        "stage": "TEXT NOT NULL DEFAULT ''",
        "sample_id": "TEXT",
        "latency_s": "REAL",
        "cost_usd": "REAL",
        "max_tokens": "INTEGER",  # sent with the request (what a TPM limit is charged with)
        "max_tokens_cap": "INTEGER",  # the stage's cap then: below it, a cut answer was re-asked
        "list_cost_usd": "REAL",  # a batch answer: what it would have cost online
    },
    "samples": {"accepted_at": "REAL"},
    "rejects": {"position": "INTEGER"},  # the source position of a rejected input line or persona
}


@dataclass(frozen=True)
class ResponseRow:
    """What the report and the summary read of one stored answer."""

    created: float
    stage: str
    endpoint: str
    model: str
    usage: dict[str, Any]
    cost_usd: float
    latency_s: float | None
    sample_id: str | None
    finish_reason: str | None
    max_tokens: int | None
    max_tokens_cap: int | None

    @property
    def cut_below_cap(self) -> bool:
        """Cut by a max_tokens sized below the stage's cap (and so asked again with more room)."""
        return (
            self.finish_reason == "length"
            and self.max_tokens is not None
            and self.max_tokens_cap is not None
            and self.max_tokens < self.max_tokens_cap
        )


@dataclass(frozen=True)
class PendingSample:
    """A sample admitted earlier and not finished (resumed first)."""

    id: str
    position: int
    source: str
    persona: str
    persona_meta: dict[str, Any]


class Store:
    """SQLite-backed job store for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._add_columns()
        # a sample's answers, replayed when a cluster worker takes the sample up again
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_sample ON responses(sample_id)")
        # answers stored before the key left out max_tokens are found under their old key too
        self.legacy_keys = self._key_scheme() != KEY_SCHEME

    def close(self) -> None:
        self._db.close()

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- response cache ---------------------------------------------------------------

    def get_response(self, key: str) -> Answer | None:
        row = self._db.execute(
            "SELECT content, finish_reason, usage, model, endpoint, cost_usd, max_tokens, max_tokens_cap"
            " FROM responses WHERE key = ?",
            (key,),
        ).fetchone()
        return None if row is None else _answer(row)

    def put_response(self, key: str, response: Answer, sample_id: str | None = None) -> None:
        """An answer, with the sample it was asked for (for the report and hand checks)."""
        self._db.execute(PUT_RESPONSE, _response_row(key, response, sample_id))

    def put_responses(self, answers: Sequence[tuple[str, Answer, str | None]]) -> int:
        """Many answers (key, answer, sample) in one transaction (a cluster worker's report);
        returns how many were stored already (asked and paid for again)."""
        with self._transaction():
            stored = self._db.executemany(
                PUT_RESPONSE, [_response_row(*answer) for answer in answers]
            ).rowcount
        return len(answers) - stored

    def responses_of(self, sample_id: str) -> dict[str, Answer]:
        """The answers stored for one sample, by request key (what a cluster worker taking the
        sample up again replays instead of asking)."""
        return {
            row[0]: _answer(row[1:])
            for row in self._db.execute(
                "SELECT key, content, finish_reason, usage, model, endpoint, cost_usd, max_tokens,"
                " max_tokens_cap FROM responses WHERE sample_id = ?",
                (sample_id,),
            )
        }

    def response_rows(self) -> Iterator[ResponseRow]:
        """Every paid answer in the order it came, for totals, the report and hand checks."""
        for row in self._db.execute(
            "SELECT created, stage, endpoint, model, usage, COALESCE(cost_usd, 0), latency_s, sample_id,"
            " finish_reason, max_tokens, max_tokens_cap FROM responses ORDER BY created"
        ):
            yield ResponseRow(row[0], row[1], row[2], row[3], orjson.loads(row[4]), *row[5:])

    def spend(self) -> float:
        """USD paid by the whole run, each answer at the price it was paid at."""
        return self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM responses").fetchone()[0]

    def batch_saving(self) -> tuple[int, float, float]:
        """Batch answers: how many, what they cost, and what they would have cost online."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(list_cost_usd), 0)"
            " FROM responses WHERE list_cost_usd IS NOT NULL"
        ).fetchone()
        return row[0], row[1], row[2]

    # -- batches (the BatchJournal of llm/batch.py) -------------------------------------

    def open_batches(self, endpoint: str) -> list[BatchRecord]:
        """Input files whose batch was not seen to end (nor known never to have been created)."""
        records = []
        for file_id, batch_id, round_, status, committed in self._db.execute(
            "SELECT file_id, batch_id, round, status, committed_usd FROM batches"
            " WHERE endpoint = ? AND status NOT LIKE 'done:%' AND status != 'not_created' ORDER BY created",
            (endpoint,),
        ).fetchall():
            requests = dict(
                self._db.execute(
                    "SELECT custom_id, key FROM batch_requests WHERE file_id = ?", (file_id,)
                ).fetchall()
            )
            records.append(BatchRecord(endpoint, file_id, batch_id, round_, status, requests, committed))
        return records

    def last_round(self, endpoint: str) -> int:
        row = self._db.execute("SELECT MAX(round) FROM batches WHERE endpoint = ?", (endpoint,)).fetchone()
        return row[0] or 0

    def file_uploaded(self, record: BatchRecord, stages: dict[str, str]) -> None:
        """An input file and its requests, before its batch is created."""
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT INTO batches (file_id, endpoint, batch_id, round, status, requests, committed_usd,"
                " created, updated) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?)",
                (
                    record.file_id,
                    record.endpoint,
                    record.round,
                    record.status,
                    len(record.requests),
                    record.committed_usd,
                    now,
                    now,
                ),
            )
            self._db.executemany(
                "INSERT INTO batch_requests (file_id, custom_id, key, stage) VALUES (?, ?, ?, ?)",
                [(record.file_id, cid, key, stages.get(cid, "")) for cid, key in record.requests.items()],
            )

    def batch_created(self, file_id: str, batch_id: str) -> None:
        self._db.execute(
            "UPDATE batches SET batch_id = ?, status = 'created', updated = ? WHERE file_id = ?",
            (batch_id, time.time(), file_id),
        )

    def batch_status(self, file_id: str, status: str, counts: dict[str, int] | None = None) -> None:
        self._db.execute(
            "UPDATE batches SET status = ?, counts = COALESCE(?, counts), updated = ? WHERE file_id = ?",
            (status, orjson.dumps(counts) if counts else None, time.time(), file_id),
        )

    def batch_rows(self) -> list[dict[str, Any]]:
        """Every batch of the run, oldest first (`agentrefine batches`, the summary)."""
        rows = self._db.execute(
            "SELECT endpoint, round, file_id, batch_id, status, requests, committed_usd, counts, created"
            " FROM batches ORDER BY created"
        ).fetchall()
        names = (
            "endpoint",
            "round",
            "file_id",
            "batch_id",
            "status",
            "requests",
            "committed_usd",
            "counts",
            "created",
        )
        return [
            {**dict(zip(names, row, strict=True)), "counts": orjson.loads(row[7]) if row[7] else None}
            for row in rows
        ]

    def price_unpriced(self, price: Callable[[str, dict[str, Any]], float]) -> int:
        """Give answers stored before costs were kept a cost: price(endpoint, usage)."""
        rows = self._db.execute(
            "SELECT key, endpoint, usage FROM responses WHERE cost_usd IS NULL"
        ).fetchall()
        with self._transaction():
            for key, endpoint, usage in rows:
                cost = price(endpoint, orjson.loads(usage))
                self._db.execute("UPDATE responses SET cost_usd = ? WHERE key = ?", (cost, key))
        return len(rows)

    # -- samples ----------------------------------------------------------------------

    def cursor(self) -> int:
        """Source position of the last persona consumed (admitted or rejected); -1 if none."""
        return int(self.get_meta("source_cursor", "-1") or -1)

    def admit(
        self,
        sample_id: str,
        position: int,
        source: str,
        persona: str,
        persona_meta: dict[str, Any],
        norm_hash: str,
        vector: bytes,
        cursor: int | None = None,
    ) -> None:
        """A new sample, its persona kept for dedup (digest and embedding), the cursor moved to
        `cursor` (default: past this position)."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO samples (id, position, source, persona, persona_meta, norm_hash, state, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                (sample_id, position, source, persona, orjson.dumps(persona_meta), norm_hash, time.time()),
            )
            self._insert_dedup_item("persona", sample_id, norm_hash, vector)
            self._set_cursor(position if cursor is None else cursor)

    def reject_input(
        self, position: int, kind: str, rule: str, record: dict[str, Any], cursor: int | None = None
    ) -> None:
        """Record a persona that never became a sample (duplicate, malformed) and move the cursor."""
        with self._transaction():
            self._insert_reject(kind, rule, record, position)
            self._set_cursor(position if cursor is None else cursor)

    def consumed_after(self, cursor: int) -> set[int]:
        """Source positions above `cursor` already taken (admitted, or rejected as input)."""
        rows = self._db.execute(
            "SELECT position FROM samples WHERE position > ?1"
            " UNION SELECT position FROM rejects WHERE position > ?1",
            (cursor,),
        )
        return {position for (position,) in rows}

    def keep_for_dedup(self, kind: str, owner: str, digest: str, vector: bytes) -> None:
        """An item kept by dedup outside admission (a sample's script)."""
        with self._transaction():
            self._insert_dedup_item(kind, owner, digest, vector)

    def dedup_items(self, kind: str) -> Iterator[tuple[str, str, bytes]]:
        """(owner, digest, vector) of every kept item of a kind, in the order kept."""
        yield from self._db.execute(
            "SELECT owner, digest, vector FROM dedup_items WHERE kind = ? ORDER BY seq", (kind,)
        )

    def pending(self) -> list[PendingSample]:
        rows = self._db.execute(
            "SELECT id, position, source, persona, persona_meta FROM samples"
            " WHERE state = 'running' ORDER BY position"
        )
        return [PendingSample(r[0], r[1], r[2], r[3], orjson.loads(r[4] or b"{}")) for r in rows]

    def accepted_count(self) -> int:
        """Accepted samples; acceptance orders run 1..n without gaps, so this is an index lookup."""
        return self._db.execute("SELECT COALESCE(MAX(accepted_seq), 0) FROM samples").fetchone()[0]

    def accept(self, sample_id: str, record: dict[str, Any], failures: list[str], target: int) -> int | None:
        """Mark a sample accepted if fewer than `target` are; return its order, or None (surplus)."""
        with self._transaction():
            count = self.accepted_count()
            blob = orjson.dumps(record)
            if count >= target:
                self._finish(sample_id, "surplus", None, failures, blob)
                return None
            self._finish(sample_id, "accepted", None, failures, blob)
            self._db.execute(
                "UPDATE samples SET accepted_seq = ?, accepted_at = ? WHERE id = ?",
                (count + 1, time.time(), sample_id),
            )
            return count + 1

    def promote_surplus(self, target: int) -> int:
        """Accept samples left over from an earlier run with a smaller target; return how many."""
        promoted = 0
        rows = self._db.execute("SELECT id FROM samples WHERE state = 'surplus' ORDER BY position").fetchall()
        for (sample_id,) in rows:
            with self._transaction():
                count = self.accepted_count()
                if count >= target:
                    break
                self._db.execute(
                    "UPDATE samples SET state = 'accepted', accepted_seq = ?, accepted_at = ? WHERE id = ?",
                    (count + 1, time.time(), sample_id),
                )
                promoted += 1
        return promoted

    def reject_sample(
        self, sample_id: str, state: str, rule: str, failures: list[str], record: dict[str, Any]
    ) -> None:
        """A sample that ends without acceptance (`dropped` after its attempts, `failed`, or
        `duplicate`: its script repeats another sample's)."""
        with self._transaction():
            self._finish(sample_id, state, rule, failures, None)
            self._insert_reject(state, rule, record)

    def accepted_records(self, skip: int) -> Iterator[bytes]:
        """Exported records of accepted samples in acceptance order, after the first `skip`."""
        for (record,) in self._db.execute(
            "SELECT record FROM samples WHERE state = 'accepted' ORDER BY accepted_seq LIMIT -1 OFFSET ?",
            (skip,),
        ):
            yield record

    def reject_records(self, skip: int) -> Iterator[bytes]:
        """Reject records in write order, after the first `skip`."""
        for (record,) in self._db.execute(
            "SELECT record FROM rejects ORDER BY seq LIMIT -1 OFFSET ?", (skip,)
        ):
            yield record

    def reject_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]

    def accepted_times(self) -> list[float]:
        """When each accepted sample was accepted (unix time), in acceptance order."""
        return [
            t
            for (t,) in self._db.execute(
                "SELECT accepted_at FROM samples WHERE state = 'accepted' AND accepted_at IS NOT NULL"
                " ORDER BY accepted_seq"
            )
        ]

    def state_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state"))

    def reject_counts(self) -> dict[tuple[str, str], int]:
        rows = self._db.execute("SELECT kind, rule, COUNT(*) FROM rejects GROUP BY kind, rule")
        return {(kind, rule): n for kind, rule, n in rows}

    def reject_kinds(self) -> dict[str, int]:
        """Rejects per kind: dropped, failed, duplicate, malformed."""
        return dict(self._db.execute("SELECT kind, COUNT(*) FROM rejects GROUP BY kind"))

    def finished_checks(self) -> Iterator[str]:
        """Every failed check of finished samples, as "rule>what the policy did next"."""
        for (failures,) in self._db.execute(
            "SELECT failures FROM samples WHERE state != 'running' AND failures != ''"
        ):
            yield from failures.split(",")

    # -- judge ----------------------------------------------------------------------------

    def put_judgements(self, sample_id: str, rows: list[tuple[Any, ...]]) -> None:
        """A sample's judged turns: (turn, dm_place, dm_logic, judge_place, judge_logic, reason,
        action, observation); a sample judged again (resumed) replaces its rows."""
        with self._transaction():
            self._db.execute("DELETE FROM judgements WHERE sample_id = ?", (sample_id,))
            self._db.executemany(
                "INSERT INTO judgements (sample_id, turn, dm_place, dm_logic, judge_place, judge_logic,"
                " reason, action, observation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(sample_id, *row) for row in rows],
            )

    def judgement_rows(self) -> Iterator[tuple[Any, ...]]:
        """The judged turns of finished samples (accepted, or dropped), in acceptance order then
        turn: (sample_id, state, turn, dm_place, dm_logic, judge_place, judge_logic, reason,
        action, observation)."""
        yield from self._db.execute(
            "SELECT j.sample_id, s.state, j.turn, j.dm_place, j.dm_logic, j.judge_place, j.judge_logic,"
            " j.reason, j.action, j.observation FROM judgements j JOIN samples s ON s.id = j.sample_id"
            " WHERE s.state IN ('accepted', 'dropped')"
            " ORDER BY s.accepted_seq IS NULL, s.accepted_seq, s.position, j.turn"
        )

    # -- internals --------------------------------------------------------------------

    def _key_scheme(self) -> str | None:
        scheme = self.get_meta("key_scheme")
        if scheme is None and self._db.execute("SELECT 1 FROM responses LIMIT 1").fetchone() is None:
            self.set_meta("key_scheme", scheme := KEY_SCHEME)
        return scheme

    def _add_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def _finish(
        self, sample_id: str, state: str, rule: str | None, failures: list[str], record: bytes | None
    ) -> None:
        self._db.execute(
            "UPDATE samples SET state = ?, rule = ?, failures = ?, record = ?, updated = ? WHERE id = ?",
            (state, rule, ",".join(failures), record, time.time(), sample_id),
        )

    def _insert_reject(
        self, kind: str, rule: str, record: dict[str, Any], position: int | None = None
    ) -> None:
        """A reject record, with any API key a provider's message echoed redacted."""
        self._db.execute(
            "INSERT INTO rejects (kind, rule, record, position) VALUES (?, ?, ?, ?)",
            (kind, rule, redact_bytes(orjson.dumps(record)), position),
        )

    def _insert_dedup_item(self, kind: str, owner: str, digest: str, vector: bytes) -> None:
        self._db.execute(
            "INSERT INTO dedup_items (kind, owner, digest, vector) VALUES (?, ?, ?, ?)",
            (kind, owner, digest, vector),
        )

    def _set_cursor(self, position: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('source_cursor', ?)"
            " ON CONFLICT(key) DO UPDATE SET"
            " value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            (str(position),),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


working_on: ContextVar[str | None] = ContextVar("working_on", default=None)
"""The sample whose stage work is running in this task (set by the run around each stage)."""


PUT_RESPONSE = (
    "INSERT OR IGNORE INTO responses (key, endpoint, model, content, finish_reason, usage, created,"
    " stage, sample_id, latency_s, cost_usd, max_tokens, max_tokens_cap, list_cost_usd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _response_row(key: str, response: Answer, sample_id: str | None) -> tuple[Any, ...]:
    return (
        key,
        response.endpoint,
        response.model,
        response.content,
        response.finish_reason,
        orjson.dumps(response.usage),
        time.time(),
        response.stage,
        sample_id,
        response.latency_s,
        response.cost_usd,
        response.max_tokens,
        response.max_tokens_cap,
        response.list_cost_usd,
    )


def _answer(row: tuple[Any, ...]) -> Answer:
    """An `Answer` from its columns: content, finish_reason, usage, model, endpoint, cost_usd,
    max_tokens, max_tokens_cap."""
    return Answer(
        row[0],
        row[1],
        orjson.loads(row[2]),
        row[3],
        row[4],
        row[5] or 0.0,
        max_tokens=row[6],
        max_tokens_cap=row[7],
    )


class StoreCache:
    """The store as the LLM clients' `AnswerCache`: every answer is kept with the sample being
    worked on when it came (`working_on`), so the report can tell what each sample cost."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.legacy_keys = store.legacy_keys

    def get(self, key: str) -> Answer | None:
        return self._store.get_response(key)

    def put(self, key: str, answer: Answer) -> None:
        self._store.put_response(key, answer, working_on.get())
