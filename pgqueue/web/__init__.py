"""pgqueue's web dashboard: `create_app(app)` returns an ASGI application (extra
`pgqueue[web]`); `pgqueue web` serves it. See docs/dashboard.md."""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the dashboard needs the web extra: pip install 'pgqueue[web]'"
        f" ({exc.name} is not installed)"
    ) from exc

from ._dashboard import AuthHook, create_app

__all__ = ["AuthHook", "create_app"]
