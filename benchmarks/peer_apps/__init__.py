"""Scripts for benchmarks/peers.py, one per peer, each run in that peer's own venv.

They import nothing from pgqueue: each peer's virtualenv holds only the peer and its
dependencies, plus `_protocol.py` (standard library only). Every script speaks the same
command line and prints one JSON object on its last stdout line:

    python <peer>_app.py setup|teardown <target>
    python <peer>_app.py enqueue-bulk|enqueue-single <target> <jobs>     # timed in-process
    python <peer>_app.py latency-enqueue <target> --warmup W --jobs N --rate R
    python <peer>_app.py work <target> --total N --concurrency C
                         [--mode drain|count|until] [--until EPOCH]
                         [--no-listen] [--poll-interval S] [--record-starts]
    python <peer>_app.py verify <target> [--histogram]

`work` prints READY when it starts consuming, then, when it stops (queue drained, N
executions, or the deadline), its ledger: executions, duplicates, a bitmap of the job
numbers it ran, the wall-clock time (time.time()) of its first start and last completion,
and with --record-starts each job's start time. `verify` reads the library's own record:
completed, still queued, claimed but unfinished, failed or re-run, and completion times.
"""
