"""The worker runtime: asyncio services composed by `Worker` (see `worker.py`)."""
