"""A worker's settings, defined once: `Worker(app, **settings)` validates them here, and the
CLI builds the `pgqueue worker` options from the same table (`SETTINGS`)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from .._core.validate import check_int, check_name, check_seconds
from ..errors import ValidationError

#: The most jobs an adaptive prefetch claims ahead of free slots (about 1 MB of small jobs).
PREFETCH_CEILING = 1000


@dataclass(frozen=True)
class Setting:
    """How one setting appears on the command line (`flags` None: not a CLI option).

    `kind` names the option's type for the CLI: int, float, bool, str, or queues (a
    repeatable string)."""

    flags: tuple[str, ...] | None
    help: str
    minimum: float | None = None
    kind: str = "float"


#: The CLI's view of each field of WorkerSettings, in the order `--help` lists them.
SETTINGS: dict[str, Setting] = {
    "queues": Setting(
        ("-q", "--queue"), "Queue to serve (repeatable; default all).", kind="queues"
    ),
    "exclude_queues": Setting(
        ("--exclude-queue",),
        "Serve every queue but this one (repeatable; queues added later included).",
        kind="queues",
    ),
    "concurrency": Setting(("-c", "--concurrency"), "Jobs run at once.", 1, kind="int"),
    "prefetch": Setting(
        ("--prefetch",),
        "Jobs claimed ahead of free slots (default: tuned to throughput, from -c up to"
        f" {PREFETCH_CEILING}).",
        0,
        kind="int",
    ),
    "burst": Setting(("--burst",), "Exit when no job is due.", kind="bool"),
    "poll_interval": Setting(("--poll-interval",), "Seconds between polls.", 0.01),
    "listen": Setting(
        ("--listen/--no-listen",), "Wake on NOTIFY; --no-listen polls only.", kind="bool"
    ),
    "listen_dsn": Setting(
        ("--listen-dsn",),
        "A direct connection for LISTEN (behind a transaction-mode pooler); env"
        " PGQUEUE_LISTEN_DSN.",
        kind="str",
    ),
    "prepared_statements": Setting(
        ("--prepared-statements/--no-prepared-statements",),
        "Server-side prepared statements (off behind PgBouncer in transaction mode).",
        kind="bool",
    ),
    "shutdown_grace": Setting(("--shutdown-grace",), "Seconds running jobs get at a stop.", 0),
    "heartbeat_interval": Setting(("--heartbeat-interval",), "Seconds between heartbeats.", 0.01),
    "heartbeat_timeout": Setting(
        ("--heartbeat-timeout",), "Rescue jobs of workers silent this long."
    ),
    "max_rescues": Setting(
        ("--max-rescues",), "Rescues before a job fails as poison.", 0, kind="int"
    ),
    "listener_check_interval": Setting(None, "Seconds between listener self-pings."),
    "prune_interval": Setting(None, "Seconds between retention passes."),
    "metrics_port": Setting(
        ("--metrics-port",), "Serve Prometheus metrics on this port.", kind="int"
    ),
    "metrics_addr": Setting(("--metrics-addr",), "Address the metrics server binds.", kind="str"),
    "handle_signals": Setting(
        None, "Install SIGINT/SIGTERM handlers (main thread only).", kind="bool"
    ),
}


#: Slots per process: each is a thread for sync tasks, and past a few thousand threads the
#: process fails to start them (`can't start new thread`) long before it runs faster.
MAX_CONCURRENCY = 4096


def check_address(name: str, value: object) -> str:
    """An IP address or a host name to bind to, refused here rather than by the socket."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{name} must be an IP address or host name, not {value!r}")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if value[0].isdigit() and all(part.isdigit() for part in value.split(".")):
        raise ValidationError(f"{name} {value!r} is not a valid IP address")
    labels = value.rstrip(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValidationError(f"{name} {value!r} is not a valid IP address or host name")
    return value


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class WorkerSettings:
    queues: Sequence[str] | None = None
    #: Every queue but these, including queues that appear later (not with `queues`).
    exclude_queues: Sequence[str] | None = None
    concurrency: int = 16
    #: Jobs claimed ahead of free slots, so slots never wait for a claim's round trip.
    #: None: tuned to throughput, from `concurrency` up to PREFETCH_CEILING (a fixed number
    #: keeps it there; 0 claims only for free slots).
    prefetch: int | None = None
    #: Exit once no job is due and none is running (jobs scheduled for later, retries
    #: waiting out their backoff included, are left for a later run).
    burst: bool = False
    poll_interval: float = 2.0
    listen: bool = True
    listen_dsn: str | None = None
    prepared_statements: bool | None = None
    shutdown_grace: float = 30.0
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_rescues: int = 3
    listener_check_interval: float = 30.0
    prune_interval: float = 60.0
    metrics_port: int | None = None
    #: Loopback unless told: metrics name queues and tasks, which are not for the world.
    metrics_addr: str = "127.0.0.1"
    handle_signals: bool = True

    def prefetch_range(self) -> tuple[int, int]:
        """The prefetch's floor and ceiling: a fixed `prefetch` is both; the default tunes it
        between `concurrency` and PREFETCH_CEILING (see Ledger.tune)."""
        if self.prefetch is not None:
            return self.prefetch, self.prefetch
        return self.concurrency, max(self.concurrency, PREFETCH_CEILING)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalised values are written once, here
        set_(
            self,
            "queues",
            [check_name("queue", q) for q in self.queues] or None if self.queues else None,
        )
        set_(
            self,
            "exclude_queues",
            [check_name("queue", q) for q in self.exclude_queues] or None
            if self.exclude_queues
            else None,
        )
        if self.queues and self.exclude_queues:
            raise ValidationError(
                "pass queues to serve or queues to exclude, not both"
                " (serving named queues already leaves the others alone)"
            )
        check_int("concurrency", self.concurrency, minimum=1)
        if self.prefetch is not None:
            check_int("prefetch", self.prefetch, minimum=0)
        if check_seconds("poll_interval", self.poll_interval) <= 0:
            raise ValidationError("poll_interval must be positive")
        for name in (
            "shutdown_grace",
            "heartbeat_interval",
            "heartbeat_timeout",
            "listener_check_interval",
            "prune_interval",
        ):
            set_(self, name, check_seconds(name, getattr(self, name)))
        if self.heartbeat_timeout <= 2 * self.heartbeat_interval:
            # One late heartbeat must not get a live worker's jobs rescued under it.
            raise ValidationError("heartbeat_timeout must exceed twice heartbeat_interval")
        check_int("max_rescues", self.max_rescues, minimum=0)
        if self.concurrency > MAX_CONCURRENCY:
            raise ValidationError(
                f"concurrency {self.concurrency} is more than one process can run"
                f" (at most {MAX_CONCURRENCY}: one thread per slot); run more workers instead"
            )
        if self.metrics_port is not None:
            check_int("metrics_port", self.metrics_port, minimum=1)
            if self.metrics_port > 65535:
                raise ValidationError(f"metrics_port must be 1-65535, not {self.metrics_port}")
        check_address("metrics_addr", self.metrics_addr)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, settings: dict[str, Any]) -> WorkerSettings:
        unknown = set(settings) - set(cls.names())
        if unknown:
            raise TypeError(f"unknown worker settings: {sorted(unknown)}")
        return cls(**settings)
