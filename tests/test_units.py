"""Pure decisions and validation: no database involved."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone

import pytest

import pgqueue
from pgqueue._core.retry import RetryPolicy, decide_failure
from pgqueue._core.validate import MAX_PAYLOAD_BYTES, encode_args, encode_json
from pgqueue._db.pools import normalize_dsn as _normalize_dsn


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base=1.0, factor=2.0, max_delay=10.0, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(10_000) == 10.0  # no float overflow on absurd attempt counts


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(base=10.0, factor=1.0, max_delay=100.0, jitter=0.25)
    rng = random.Random(7)
    delays = [policy.delay(1, rng) for _ in range(500)]
    assert min(delays) >= 7.5 and max(delays) <= 12.5
    assert len({round(d, 3) for d in delays}) > 100  # actually spread out


def test_failure_retries_until_max_attempts_then_fails() -> None:
    policy = RetryPolicy(jitter=0)
    assert decide_failure(1, 3, policy).state == "retrying"
    assert decide_failure(2, 3, policy).state == "retrying"
    assert decide_failure(3, 3, policy).state == "failed"
    assert decide_failure(1, 3, policy, retryable=False).state == "failed"


@pytest.mark.parametrize(
    "bad", [{"factor": 0.5}, {"jitter": 2}, {"base": -1}, {"max_delay": math.inf}]
)
def test_retry_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(pgqueue.ValidationError):
        RetryPolicy(**bad)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"x": math.nan}, "not valid JSON"),
        ({"x": math.inf}, "not valid JSON"),
        ({"x": object()}, "not JSON-serializable"),
        ({"x": {1, 2}}, "not JSON-serializable"),
        ({"x": "a\x00b"}, "NUL"),
        ({"x": ["ok", {"y\x00": 1}]}, "NUL"),
        ({"x": "y" * (MAX_PAYLOAD_BYTES + 1)}, "limit"),
    ],
)
def test_bad_arguments_are_refused_with_a_typed_error(
    args: dict[str, object], fragment: str
) -> None:
    with pytest.raises(pgqueue.ValidationError, match=fragment):
        encode_args(args)


def test_good_arguments_encode_compactly() -> None:
    assert encode_args({"a": 1, "b": [True, None, "é"]}) == '{"a":1,"b":[true,null,"\\u00e9"]}'
    assert encode_json(None, "result") == "null"


def test_app_without_dsn_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGQUEUE_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(pgqueue.ConfigurationError, match="PGQUEUE_DSN"):
        pgqueue.App()


def test_app_reads_dsn_and_schema_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_DSN", "postgresql://example/db")
    monkeypatch.setenv("PGQUEUE_SCHEMA", "jobs_v2")
    app = pgqueue.App()
    assert app.dsn == "postgresql://example/db"
    assert app.schema == "jobs_v2"


@pytest.mark.parametrize(
    "schema", ['x"; DROP TABLE t; --', "a.b", "a%b", "UPPER", "tab\tname", "s" * 49, "", "1abc"]
)
def test_hostile_schema_names_are_rejected(schema: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="schema"):
        pgqueue.App("postgresql://x/y", schema=schema)


def test_sqlalchemy_urls_are_accepted() -> None:
    assert _normalize_dsn("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert _normalize_dsn("postgresql://u@h/db") == "postgresql://u@h/db"


def _app() -> pgqueue.App:
    return pgqueue.App("postgresql://unused/db")


def test_positional_arguments_are_a_type_error() -> None:
    app = _app()

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(TypeError, match="keyword arguments only"):
        add.enqueue(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        add.enqueue(a=1, b=2, c=3)
    assert add(a=1, b=2) == 3  # calling the task runs the function in-process


@pytest.mark.parametrize("name", ["has space", "semi;colon", "quote'", "", "x" * 129, "-lead"])
def test_bad_task_and_queue_names_are_refused(name: str) -> None:
    app = _app()
    with pytest.raises(pgqueue.ValidationError):
        app.task(name=name)(lambda: None)

    @app.task(name="ok")
    def ok() -> None: ...

    with pytest.raises(pgqueue.ValidationError):
        ok.options(queue=name)


def test_default_task_name_is_module_and_function() -> None:
    app = _app()

    @app.task
    def greet() -> None: ...

    assert greet.name == f"{__name__}.greet"
    assert app.tasks[greet.name] is greet


def test_registering_another_function_under_a_taken_name_fails() -> None:
    app = _app()
    app.task(name="same")(lambda: 1)
    with pytest.raises(pgqueue.ValidationError, match="already registered"):
        app.task(name="same")(lambda: 2)


def test_options_are_validated_before_any_io() -> None:
    app = _app()

    @app.task
    def t() -> None: ...

    for bad in (
        {"priority": "high"},
        {"delay": -1},
        {"max_attempts": 0},
        {"unique_key": ""},
        {"delay": 1, "run_at": datetime.now(timezone.utc)},
    ):
        with pytest.raises(pgqueue.ValidationError):
            t.options(**bad)
    with pytest.raises(pgqueue.ValidationError, match="timezone"):
        t.options(run_at=datetime(2030, 1, 1))
