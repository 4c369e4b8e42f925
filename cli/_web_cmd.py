"""`pgqueue web`: the dashboard (pgqueue.web) served by uvicorn."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from ._common import DsnOption, SchemaOption, _app
from ._output import err, errors, fail


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def web(
    host: Annotated[
        str,
        typer.Option(help="Address to listen on. The default accepts this machine only."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Pages only: no retry, cancel or pause.")
    ] = False,
    base_path: Annotated[
        str, typer.Option(help="Serve under this path, e.g. /jobs behind a proxy.")
    ] = "",
    dsn: DsnOption = None,
    schema: SchemaOption = None,
) -> None:
    """Serve the web dashboard (needs the web extra of pgqueue)."""
    try:
        import uvicorn

        from pgqueue.web import create_app
    except ImportError as exc:
        fail(f"the dashboard needs the web extra: pip install 'pgqueue[web]' ({exc})", code=2)
    base_path = base_path.rstrip("/")
    if base_path and not base_path.startswith("/"):
        fail(f"--base-path must start with /, not {base_path!r}", code=2)
    with errors():
        qapp = _app(dsn, schema)
        qapp.queue_stats()  # an unreachable or unmigrated database fails here, in one line
    asgi = create_app(qapp, read_only=read_only, base_path=base_path)
    shown = f"[{host}]" if ":" in host else host
    where = (
        "this machine only; pass --host to listen elsewhere"
        if _loopback(host)
        else "every client that can reach this address: put it behind a proxy with a login,"
        " or use --read-only"
    )
    mode = " (read-only)" if read_only else ""
    err.print(
        f"pgqueue dashboard{mode} on http://{shown}:{port}{base_path}/ , listening on"
        f" {host} for {where}",
        highlight=False,
        markup=False,  # an IPv6 host is written in brackets
        soft_wrap=True,
    )
    uvicorn.run(asgi, host=host, port=port, log_level="warning", server_header=False)
