"""The run on a Ray cluster (`--workers K`, `make run WORKERS=K`): the sample stages on K Ray
workers, everything that must be one for the whole run on the driver.

The driver is the single-process run (`service/run.py`) with one change: its job queue has a
single stage, `WorkerPool.walk`, which hands the sample to the least loaded worker and waits
for it to come back finished. So the driver keeps what makes the run one run: the store (one
SQLite file, its only writer), admission and the persona source, the persona dedup and the
script dedup index, the recorder (exactly N accepted), the budget, the metrics, the progress
line, the output and the report.

A worker (`worker.py`, a Ray actor) walks the samples it is given through the sample stages
with its own LLM clients. Each process that asks an endpoint holds a lease of its key
(`leases.py`): its limiter's buckets refill that part of the key's RPM and TPM, the leases of a
key sum to 1, and the driver divides them anew every second by what each process uses. A
worker also runs the dedup's embeddings (the CPU-heavy half of dedup): its scripts', sent with
each script for the driver to screen against the run's one index, and the personas the driver
screens at admission (`embedder.py`). What it produces travels back to the driver in one
stream of reports (`protocol.py`), every `FLUSH_S`, in the order it happened: answers, request
events, judge verdicts, script checks, finished samples. The driver stores a report's answers
before it records the samples it finishes, so every answer is stored before it counts.

A worker that dies (SIGKILL, a lost node) loses at most its last report: the driver hands its
samples to the other workers, with the answers stored for them to replay instead of paying
again, and starts a replacement (`pool.py`). Killing the driver stops the workers with it (Ray
ends a job's actors with its driver); the same command resumes from the store.

Ray is imported only here and only when `cluster.workers` > 0 (`connect.py`).
"""
