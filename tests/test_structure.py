"""The layer rules of ARCHITECTURE.md §3.2, checked on the source: a layer that reaches
where it must not fails here, before it becomes a habit."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import pgqueue
from pgqueue import App, Job, Task, TaskCall

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ("psycopg", "psycopg_pool", "sqlalchemy", "django")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("cli", "sql"):
        parts = ["pgqueue", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at any level (type-checking blocks included)."""
    mod = _module(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


FILES = {_module(p): p for d in ("pgqueue", "cli") for p in (ROOT / d).rglob("*.py")}
IMPORTS = {mod: _imports(path) for mod, path in FILES.items()}


def _top(name: str) -> str:
    return name.split(".")[0]


def _internal(mod: str) -> set[str]:
    return {i for i in IMPORTS[mod] if i in FILES and i != mod}


def _allowed_drivers(mod: str) -> tuple[str, ...]:
    """The seam may import every driver; the Django integration only Django itself (its SQL
    still runs through the seam's Django target)."""
    if mod.startswith("pgqueue._db"):
        return DRIVERS
    if mod.startswith("pgqueue.contrib.django"):
        return ("django",)
    return ()


def test_only_the_driver_seam_imports_a_database_driver() -> None:
    offenders = {
        mod: sorted(
            i for i in imports if _top(i) in DRIVERS and _top(i) not in _allowed_drivers(mod)
        )
        for mod, imports in IMPORTS.items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_core_is_pure() -> None:
    """No driver, no asyncio, no sockets, and of pgqueue only types, errors and itself."""
    for mod, imports in IMPORTS.items():
        if not mod.startswith("pgqueue._core"):
            continue
        for name in imports:
            assert _top(name) not in (*DRIVERS, "asyncio", "socket", "threading"), (mod, name)
            if name.startswith("pgqueue"):
                assert name.startswith(("pgqueue._core", "pgqueue.types", "pgqueue.errors")), (
                    mod,
                    name,
                )


def test_the_seam_and_the_runtime_stay_in_their_layers() -> None:
    for mod in FILES:
        inside = _internal(mod)
        if mod.startswith("pgqueue._db"):
            allowed = ("pgqueue._db", "pgqueue._core", "pgqueue.types", "pgqueue.errors")
            assert all(i.startswith(allowed) for i in inside), (mod, inside)
        if mod.startswith("pgqueue._runtime"):
            assert not any(
                i.startswith(("pgqueue._app", "pgqueue.cli", "pgqueue.testing")) for i in inside
            ), (mod, inside)
        if mod in ("pgqueue.types", "pgqueue.errors"):
            assert inside == set(), (mod, inside)


def test_no_import_cycles() -> None:
    graph = {mod: {i for i in _internal(mod) if FILES[i].name != "__init__.py"} for mod in FILES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


#: Public methods that do no I/O, so they have no async twin.
NO_IO = {
    App: {"task", "worker", "redact", "periodic"},
    Task: {"options", "check_arguments", "check_argument_names", "spec", "catalog_entry"},
    TaskCall: {"options"},
    Job: set(),
}
#: Twins named by convention rather than by suffix.
RENAMED = {"close": "aclose"}


@pytest.mark.parametrize("cls", [App, Task, TaskCall, Job], ids=lambda c: c.__name__)
def test_every_sync_method_has_an_async_twin_with_the_same_parameters(cls: type) -> None:
    methods = {
        name: fn
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in NO_IO[cls]
    }
    sync = {n for n in methods if not n.endswith("_async") and n != "aclose"}
    for name in sync:
        twin = RENAMED.get(name, f"{name}_async")
        assert twin in methods, f"{cls.__name__}.{name} has no {twin}"
        assert inspect.iscoroutinefunction(methods[twin]), f"{cls.__name__}.{twin} is not async"
        assert not inspect.iscoroutinefunction(methods[name]), f"{cls.__name__}.{name} is async"
        assert (
            inspect.signature(methods[name]).parameters.keys()
            == inspect.signature(methods[twin]).parameters.keys()
        ), f"{cls.__name__}.{name} and {twin} take different parameters"
    for name in methods:
        if name.endswith("_async"):
            assert name.removesuffix("_async") in methods, f"{cls.__name__}.{name} has no sync twin"


def test_public_surface_keeps_its_names() -> None:
    assert set(pgqueue.__all__) >= {
        "App", "EnqueueOptions", "Job", "JobContext", "Task", "TaskCall", "Worker",
        "RetryPolicy", "JsonFormatter", "configure_logging", "current_job", "JobInfo",
        "JobState", "QueueStats", "__version__",
    }  # fmt: skip
