"""The asyncio workers: the job queue that walks each admitted sample through its stages, the
pacing that sizes the work in flight by what the endpoints take, and its accounting."""
