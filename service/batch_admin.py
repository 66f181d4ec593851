"""`agentrefine batches OUT`: a batch-mode run's batches and their states, and `--cancel`.

The list comes from the run's store (the journal of `llm/batch.py`). Cancelling asks each
endpoint that has unfinished batches to cancel them (the embedded endpoint is started on the
run's own state directory for it); the run must not be running (it holds the directory's
lock), and a later resume polls the cancelled batches and sends their unanswered requests in
a new round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from service import rundir
from service.config import Config
from service.embedded import EmbeddedEndpoint
from service.store import Store


def format_batches(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'round':>5}  {'endpoint':<12} {'batch':<32} {'status':<12} {'requests':>8}  counts"]
    for row in rows:
        counts = row["counts"] or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"
        lines.append(
            f"{row['round']:>5}  {row['endpoint']:<12} {row['batch_id'] or '(not created)':<32} "
            f"{row['status'].removeprefix('done:'):<12} {row['requests']:>8}  {shown}"
        )
    unfinished = sum(1 for row in rows if not row["status"].startswith("done:") and row["batch_id"])
    lines.append(f"{len(rows)} batches, {unfinished} not finished")
    return "\n".join(lines)


async def cancel_batches(config: Config) -> list[str]:
    """Cancel the run's unfinished batches at their endpoints; one line per batch."""
    out = Path(config.run.out)
    lines: list[str] = []
    with rundir.exclusive(out / ".lock"):
        store = Store(out / "state.sqlite")
        try:
            rows = [r for r in store.batch_rows() if r["batch_id"] and not r["status"].startswith("done:")]
            for name in sorted({row["endpoint"] for row in rows}):
                endpoint = config.endpoints[name]
                embedded = None
                base_url = endpoint.base_url
                if endpoint.embedded is not None:
                    embedded = EmbeddedEndpoint(
                        name,
                        endpoint.embedded,
                        out / f"endpoint-{name}.log",
                        out / f"endpoint-{name}-batches",
                    )
                    base_url = await embedded.start()
                api = AsyncOpenAI(base_url=base_url, api_key=endpoint.api_key())
                try:
                    for row in rows:
                        if row["endpoint"] == name:
                            batch = await api.batches.cancel(row["batch_id"])
                            store.batch_status(row["file_id"], batch.status)
                            lines.append(f"{row['batch_id']}: {batch.status}")
                finally:
                    await api.close()
                    if embedded is not None:
                        await embedded.stop()
        finally:
            store.close()
    return lines or ["no unfinished batches"]
