"""The `pgqueue` command line: thin typer commands over the public API."""

from .main import app, main

__all__ = ["app", "main"]
