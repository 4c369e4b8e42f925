"""Pure decisions of the worker: what happens after a failed attempt, and how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import ValidationError
from ..types import JobState
from .validate import check_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts.

    The delay before attempt n+1 is `base * factor ** (n - 1)`, capped at `max_delay`, then
    spread by `jitter` (a fraction: 0.25 means up to 25 % earlier or later) so that jobs that
    failed together (an API outage) do not all retry in the same instant.
    """

    base: float = 2.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        check_seconds("base", self.base)
        check_seconds("max_delay", self.max_delay)
        if self.factor < 1:
            raise ValidationError(f"factor must be >= 1, not {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValidationError(f"jitter must be between 0 and 1, not {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt - 1, 0)
        # Cap before exponentiating past the float range on absurd attempt counts.
        raw = (
            self.max_delay
            if exponent > 64
            else min(self.base * self.factor**exponent, self.max_delay)
        )
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            raw *= 1 + spread
        return max(raw, 0.0)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class FailureDecision:
    """What to write for a failed attempt: `retrying` after `delay` seconds, or `failed`."""

    state: JobState
    delay: float


def decide_failure(
    attempt: int,
    max_attempts: int,
    policy: RetryPolicy,
    *,
    retryable: bool = True,
    delay: float | None = None,
) -> FailureDecision:
    """`delay`, when given (a task's `Retry(after=...)`), replaces the policy's backoff."""
    if retryable and attempt < max_attempts:
        return FailureDecision(JobState.RETRYING, policy.delay(attempt) if delay is None else delay)
    return FailureDecision(JobState.FAILED, 0.0)
