"""Run a command and record its exact peak RSS: `python -S rss_wrapper.py RESULT -- CMD...`.

Why a wrapper: Linux reports as a child's `ru_maxrss` the larger of its own peak and the RSS of
the address space it replaced at exec, i.e. its parent's at spawn time. Spawned straight from
the harness (tens of MiB, growing with what it has enqueued), every small worker would report
the harness's size. Spawned from this small process (a few MiB, no site packages), the
number is the worker's own peak. SIGTERM and SIGINT are passed on to the command. Standard
library only; writes {"maxrss_kib", "wrapper_maxrss_kib", "returncode", "user_s", "sys_s"}
(the command's peak RSS and CPU time, its own waited-for children included) as JSON to RESULT
and exits with the command's exit code.
"""

import contextlib
import json
import os
import resource
import signal
import sys


def main() -> int:
    result_path, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        raise SystemExit("usage: rss_wrapper.py RESULT -- COMMAND...")
    pid = os.posix_spawnp(command[0], command, os.environ)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _, status, usage = os.wait4(pid, 0)  # retried by Python across the forwarded signals
    code = os.waitstatus_to_exitcode(status)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(
            {
                "maxrss_kib": usage.ru_maxrss,
                "wrapper_maxrss_kib": own,
                "returncode": code,
                "user_s": usage.ru_utime,
                "sys_s": usage.ru_stime,
            },
            out,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
