"""Worker scripts for benchmarks/peers.py, one per peer, each run in that peer's own venv.

They import nothing from pgqueue: each peer's virtualenv holds only the peer and its
dependencies. The asyncio apps share `_protocol.py` (standard library only). Every
script speaks the same small command line protocol:

    python <peer>_app.py enqueue <target> <jobs>
    python <peer>_app.py work <target> <jobs> <concurrency>

and prints one JSON object on its last stdout line. `work` drains the queue with one worker
process and reports the wall-clock time (time.time()) of the first start and the last
completion of a job, plus how many executions and distinct job arguments it saw.
"""
