"""The files and batches API of the embedded endpoint, shaped like OpenAI's Batch API.

Routes: ``POST /v1/files`` (multipart: ``purpose``, ``file``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``; ``POST /v1/batches``,
``GET /v1/batches`` (``limit``, ``after``), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``.

A batch moves ``validating -> in_progress -> finalizing -> completed`` as time passes
(`BatchApiSettings`: seconds per status, times `time_scale`), or ends ``failed`` (a bad input
file, the enqueued-token limit of its model, `fail_first`), ``expired`` (`expire_first`: half
its requests answered, the rest ``batch_expired`` in the error file) or ``cancelled``
(``cancelling`` first; the share of its time spent answered). Its status is worked out when
it is asked for, from the wall clock, so the endpoint keeps no timers, and everything (files,
batches, counters) lives in a state directory: an endpoint restarted on the same directory
(the run's own, after a SIGKILL) knows the batches it was given, as a provider does.

Each request of a batch is answered by the chat endpoint's own answer writer
(`simulator.answer`), so batch answers have the same content, flaws and usage as online ones;
`p_request_error` of them get a 500 in the error file instead, and a body the chat endpoint
would refuse gets its 400 there. ``/_sim/stats`` shows ``batch_api``: batches created and
per status, files, requests, and ``answered_twice`` (questions answered in two batches) and
``inputs_batched_twice`` (input files given to two batches), which a client that resumes
correctly keeps at 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from simulator import tokens
from simulator.answer import Answer, write
from simulator.content import max_tokens_of, request_digest
from simulator.state import SimState
from simulator.validation import batch_problem, error_body

MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200 * 1024 * 1024
CHAT_URL = "/v1/chat/completions"
UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")


class BatchApi:
    """Files and batches kept in `directory` (a temporary one when None)."""

    def __init__(self, st: SimState, directory: str | None) -> None:
        self.st = st
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sim-batches-")
            directory = self._tmp.name
        self.dir = Path(directory)
        (self.dir / "files").mkdir(parents=True, exist_ok=True)
        (self.dir / "batches").mkdir(exist_ok=True)
        self.counters: dict[str, Any] = self._load(self.dir / "counters.json") or {
            "created": 0,
            "files": 0,
            "requests": 0,
            "fates_given": 0,
            "answered": {},
            "inputs": {},
        }
        self._locks: dict[str, asyncio.Lock] = {}

    # -- persistence ------------------------------------------------------------------

    def _load(self, path: Path) -> Any:
        try:
            return orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None

    def _save(self, path: Path, value: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(value if isinstance(value, bytes) else orjson.dumps(value))
        os.replace(tmp, path)

    def _save_counters(self) -> None:
        self._save(self.dir / "counters.json", self.counters)

    def file_meta(self, file_id: str) -> dict[str, Any] | None:
        return self._load(self.dir / "files" / f"{_safe(file_id)}.json")

    def file_bytes(self, file_id: str) -> bytes:
        return (self.dir / "files" / f"{_safe(file_id)}.data").read_bytes()

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        meta = {
            "id": "file-" + uuid.uuid4().hex[:24],
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._save(self.dir / "files" / f"{meta['id']}.data", data)
        self._save(self.dir / "files" / f"{meta['id']}.json", meta)
        if purpose == "batch":
            self.counters["files"] += 1
            self._save_counters()
        return meta

    def files(self) -> list[dict[str, Any]]:
        return sorted(
            (orjson.loads(p.read_bytes()) for p in (self.dir / "files").glob("*.json")),
            key=lambda m: m["created_at"],
        )

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._load(self.dir / "batches" / f"{_safe(batch_id)}.json")

    def _put_batch(self, batch: dict[str, Any]) -> None:
        self._save(self.dir / "batches" / f"{batch['id']}.json", batch)

    def batches(self) -> list[dict[str, Any]]:
        found = [orjson.loads(p.read_bytes()) for p in (self.dir / "batches").glob("*.json")]
        return sorted(found, key=lambda b: (b["created_at"], b["id"]), reverse=True)

    # -- batches ----------------------------------------------------------------------

    def create(self, input_file_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        s = self.st.settings.batches
        now = time.time()
        batch: dict[str, Any] = {
            "id": "batch_" + uuid.uuid4().hex[:24],
            "object": "batch",
            "endpoint": CHAT_URL,
            "errors": None,
            "input_file_id": input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(now),
            "in_progress_at": None,
            "expires_at": int(now) + 86_400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": metadata or {},
            "_t0": now,
            "_fate": None,
            "_tokens": 0,
            "_model": None,
        }
        requests, problems = self._parse_input(input_file_id)
        batch["_tokens"] = sum(
            tokens.count_messages(body.get("messages") or []) + (max_tokens_of(body) or 0)
            for _, body in requests
        )
        batch["_model"] = next((body.get("model") for _, body in requests), None)
        given = self.counters["fates_given"]
        if problems:
            batch["_fate"] = "invalid"
            batch["_errors"] = problems
        elif given < s.fail_first:
            batch["_fate"] = "fail"
        elif given < s.fail_first + s.expire_first:
            batch["_fate"] = "expire"
        elif (
            s.max_enqueued_tokens
            and self._enqueued(batch["_model"]) + batch["_tokens"] > s.max_enqueued_tokens
        ):
            batch["_fate"] = "token_limit"
        self.counters["fates_given"] = given + 1
        self.counters["created"] += 1
        self.counters["requests"] += len(requests)
        inputs = self.counters["inputs"]
        inputs[input_file_id] = inputs.get(input_file_id, 0) + 1
        self._put_batch(batch)
        self._save_counters()
        return batch

    def _enqueued(self, model: str | None) -> int:
        return sum(
            b["_tokens"]
            for b in self.batches()
            if b["_model"] == model and b["status"] in UNFINISHED and b["_fate"] is None
        )

    def _parse_input(self, file_id: str) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
        """The (custom_id, body) of each line, and what makes the file invalid."""
        data = self.file_bytes(file_id)
        requests: list[tuple[str, dict[str, Any]]] = []
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) > MAX_REQUESTS or len(data) > MAX_FILE_BYTES:
            problems.append(_problem("too_large", f"at most {MAX_REQUESTS} requests and 200 MB per batch"))
        for number, line in enumerate(lines, 1):
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                problems.append(
                    _problem("invalid_json_line", "This line is not parseable as valid JSON.", number)
                )
                continue
            if not isinstance(item, dict) or not isinstance(item.get("body"), dict):
                problems.append(
                    _problem("invalid_request", "Each line must have a JSON object body.", number)
                )
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or custom_id in seen:
                problems.append(_problem("duplicate_custom_id", "custom_id must be unique strings.", number))
                continue
            if item.get("url") != CHAT_URL or item.get("method") != "POST":
                problems.append(_problem("invalid_url", f"url must be {CHAT_URL}, method POST.", number))
                continue
            seen.add(custom_id)
            requests.append((custom_id, item["body"]))
        if len({body.get("model") for _, body in requests}) > 1:
            problems.append(_problem("mismatched_model", "All requests of a batch must use one model."))
        return requests, problems

    async def current(self, batch_id: str) -> dict[str, Any] | None:
        """The batch, moved on to the status its age gives it."""
        lock = self._locks.setdefault(batch_id, asyncio.Lock())
        async with lock:
            batch = self.batch(batch_id)
            if batch is None or batch["status"] not in UNFINISHED:
                return batch
            await self._advance(batch)
            self._put_batch(batch)
            return batch

    async def cancel(self, batch_id: str) -> dict[str, Any] | None:
        batch = await self.current(batch_id)
        if batch is not None and batch["status"] in UNFINISHED:
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
            batch["_cancel_at"] = time.time()
            self._put_batch(batch)
        return batch

    async def _advance(self, batch: dict[str, Any]) -> None:
        s = self.st.settings.batches
        scale = self.st.settings.time_scale
        now = time.time()
        validating = s.validating_s * scale
        running = validating + s.in_progress_s * scale
        finalizing = running + s.finalizing_s * scale
        t0 = batch["_t0"]
        if batch["status"] == "cancelling":
            share = min(
                1.0, max(0.0, (batch["_cancel_at"] - t0 - validating) / max(running - validating, 1e-9))
            )
            await self._finish(batch, "cancelled", share)
            return
        elapsed = now - t0
        if elapsed < validating:
            return
        fate = batch["_fate"]
        if fate in ("invalid", "fail", "token_limit"):
            batch["status"], batch["failed_at"] = "failed", int(t0 + validating)
            batch["errors"] = {"object": "list", "data": batch.get("_errors") or [_fate_error(fate, batch)]}
            return
        requests, _ = self._parse_input(batch["input_file_id"])
        batch["in_progress_at"] = int(t0 + validating)
        batch["request_counts"]["total"] = len(requests)
        if elapsed < running:
            batch["status"] = "in_progress"
            batch["request_counts"]["completed"] = int(
                len(requests) * (elapsed - validating) / (running - validating)
            )
            return
        if fate == "expire":
            await self._finish(batch, "expired", 0.5)
            return
        if elapsed < finalizing:
            batch["status"], batch["finalizing_at"] = "finalizing", int(t0 + running)
            batch["request_counts"]["completed"] = len(requests)
            return
        await self._finish(batch, "completed", 1.0)

    async def _finish(self, batch: dict[str, Any], status: str, share: float) -> None:
        """Answer the first `share` of the requests; the rest go to the error file as unfinished."""
        requests, _ = self._parse_input(batch["input_file_id"])
        answered = round(len(requests) * share)
        outputs: list[bytes] = []
        errors: list[bytes] = []
        rng = random.Random(f"batch-errors:{self.st.settings.seed}:{batch['id']}")
        digests = self.counters["answered"]
        for i, (custom_id, body) in enumerate(requests):
            if i % 32 == 31:
                await asyncio.sleep(0)  # the endpoint keeps answering while it writes
            if i >= answered:
                code = "batch_expired" if status == "expired" else "batch_cancelled"
                errors.append(
                    _line(
                        custom_id,
                        None,
                        {"code": code, "message": f"This request was not run: the batch {status}."},
                    )
                )
                continue
            status_code, response = self._answer(body, rng)
            line = _line(
                custom_id,
                {"status_code": status_code, "request_id": uuid.uuid4().hex, "body": response},
                None,
            )
            if status_code == 200:
                outputs.append(line)
                digest = request_digest(body)
                digests[digest] = digests.get(digest, 0) + 1
            else:
                errors.append(line)
        now = int(time.time())
        if outputs:
            batch["output_file_id"] = self.add_file(
                b"".join(outputs), f"{batch['id']}_output.jsonl", "batch_output"
            )["id"]
        if errors:
            batch["error_file_id"] = self.add_file(
                b"".join(errors), f"{batch['id']}_error.jsonl", "batch_output"
            )["id"]
        batch["status"] = status
        batch[f"{status}_at"] = now
        batch["request_counts"] = {"total": len(requests), "completed": len(outputs), "failed": len(errors)}
        self._save_counters()

    def _answer(self, body: dict[str, Any], rng: random.Random) -> tuple[int, dict[str, Any]]:
        """What the chat endpoint would answer this body (not streamed), or a 500."""
        st = self.st
        problem = batch_problem(body, st.settings)
        if problem is not None:
            return 400, error_body(problem, "invalid_request_error")
        if rng.random() < st.settings.batches.p_request_error:
            return 500, error_body("The server had an error processing your request.", "server_error")
        prompt_tokens = tokens.count_messages(body["messages"])
        answer = Answer(body, request_digest(body), prompt_tokens, 0, None, time.monotonic())
        write(st, answer)
        return 200, answer.completion

    def stats(self) -> dict[str, Any]:
        by_status = Counter(b["status"] for b in self.batches())
        answered = self.counters["answered"]
        return {
            "created": self.counters["created"],
            "by_status": dict(by_status),
            "files": self.counters["files"],
            "requests": self.counters["requests"],
            "answered": sum(answered.values()),
            "answered_twice": sum(1 for n in answered.values() if n > 1),
            "inputs_batched_twice": sum(1 for n in self.counters["inputs"].values() if n > 1),
        }


def _safe(identifier: str) -> str:
    return "".join(c for c in identifier if c.isalnum() or c in "-_")


def _problem(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _fate_error(fate: str, batch: dict[str, Any]) -> dict[str, Any]:
    if fate == "token_limit":
        return _problem(
            "token_limit_exceeded",
            f"Enqueued token limit reached for {batch['_model']}. "
            "Please try submitting your batch again later.",
        )
    return _problem("batch_failed", "The batch failed (simulated).")


def _line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    item = {
        "id": "batch_req_" + uuid.uuid4().hex[:24],
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return orjson.dumps(item) + b"\n"


def public(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch object as the API shows it (without the endpoint's own bookkeeping)."""
    return {k: v for k, v in batch.items() if not k.startswith("_")}


BATCH_API: web.AppKey[BatchApi] = web.AppKey("batch_api")
Guard = Callable[[web.Request], web.Response | None]


def add_routes(app: web.Application, api: BatchApi, guard: Guard) -> None:
    """The files and batches routes; `guard` answers a request it refuses (auth), else None."""
    app[BATCH_API] = api

    def route(handler: Callable[[web.Request, BatchApi], Awaitable[web.Response]]) -> Any:
        async def handle(request: web.Request) -> web.Response:
            refused = guard(request)
            if refused is not None:
                return refused
            if not api.st.settings.batches.enabled:
                return _json(
                    404,
                    error_body(
                        f"Unknown request URL: {request.method} {request.path}.",
                        "invalid_request_error",
                        None,
                        "unknown_url",
                    ),
                )
            return await handler(request, api)

        return handle

    app.router.add_post("/v1/files", route(_upload))
    app.router.add_get("/v1/files", route(_list_files))
    app.router.add_get("/v1/files/{id}", route(_file))
    app.router.add_get("/v1/files/{id}/content", route(_content))
    app.router.add_post("/v1/batches", route(_create))
    app.router.add_get("/v1/batches", route(_list_batches))
    app.router.add_get("/v1/batches/{id}", route(_get_batch))
    app.router.add_post("/v1/batches/{id}/cancel", route(_cancel))


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _not_found(what: str, ident: str) -> web.Response:
    return _json(404, error_body(f"No such {what}: {ident}", "invalid_request_error", "id", None))


async def _upload(request: web.Request, api: BatchApi) -> web.Response:
    form = await request.post()
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch" or not isinstance(upload, web.FileField):
        return _json(
            400, error_body("expected multipart fields purpose=batch and file", "invalid_request_error")
        )
    return _json(200, api.add_file(upload.file.read(), upload.filename, "batch"))


async def _list_files(request: web.Request, api: BatchApi) -> web.Response:
    return _json(200, {"object": "list", "data": api.files(), "has_more": False})


async def _file(request: web.Request, api: BatchApi) -> web.Response:
    meta = api.file_meta(request.match_info["id"])
    return _json(200, meta) if meta else _not_found("file", request.match_info["id"])


async def _content(request: web.Request, api: BatchApi) -> web.Response:
    file_id = request.match_info["id"]
    if api.file_meta(file_id) is None:
        return _not_found("file", file_id)
    return web.Response(body=api.file_bytes(file_id), content_type="application/octet-stream")


async def _create(request: web.Request, api: BatchApi) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _json(400, error_body("The request body must be a JSON object.", "invalid_request_error"))
    file_id = body.get("input_file_id")
    if body.get("endpoint") != CHAT_URL:
        return _json(400, error_body(f"endpoint must be {CHAT_URL}", "invalid_request_error", "endpoint"))
    if body.get("completion_window") != "24h":
        return _json(
            400, error_body("completion_window must be 24h", "invalid_request_error", "completion_window")
        )
    meta = api.file_meta(file_id) if isinstance(file_id, str) else None
    if meta is None or meta["purpose"] != "batch":
        return _json(
            400, error_body(f"No batch input file {file_id}", "invalid_request_error", "input_file_id")
        )
    return _json(200, public(api.create(file_id, body.get("metadata"))))


async def _list_batches(request: web.Request, api: BatchApi) -> web.Response:
    limit = int(request.query.get("limit", "20"))
    found = api.batches()
    after = request.query.get("after")
    if after:
        ids = [b["id"] for b in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    page = [public(b) for b in found[:limit]]
    return _json(
        200,
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(found) > limit,
        },
    )


async def _get_batch(request: web.Request, api: BatchApi) -> web.Response:
    batch = await api.current(request.match_info["id"])
    return _json(200, public(batch)) if batch else _not_found("batch", request.match_info["id"])


async def _cancel(request: web.Request, api: BatchApi) -> web.Response:
    batch = await api.cancel(request.match_info["id"])
    return _json(200, public(batch)) if batch else _not_found("batch", request.match_info["id"])
