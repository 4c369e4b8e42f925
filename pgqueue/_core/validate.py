"""Checks and encodings that run before any SQL, so bad input never reaches the database."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError, ValidationError

#: Queue and task names: letters, digits and `_ . : -`, 1 to 128 characters, not starting with
#: punctuation other than `_`. The same pattern is a CHECK constraint on the table.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")

#: Schema names are stricter: they also name the NOTIFY channels, which PostgreSQL caps at 63
#: bytes, and a lower-case identifier is what an operator expects to type unquoted.
SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,47}")

#: Encoded arguments (and results) larger than this are refused: store a reference, not a blob.
MAX_PAYLOAD_BYTES = 1024 * 1024


def check_name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid {kind} name {value!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
    return value


def check_schema(value: object) -> str:
    if not isinstance(value, str) or not SCHEMA_PATTERN.fullmatch(value):
        raise ConfigurationError(
            f"invalid schema name {value!r}: use 1-48 lower-case letters, digits or '_',"
            " not starting with a digit"
        )
    return value


def _check_strings(value: Any, path: str) -> None:
    """Refuse NUL characters, which jsonb cannot store (and would fail only at INSERT)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError(f"{path} contains a NUL character, which jsonb cannot store")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                raise ValidationError(f"a key in {path} contains a NUL character")
            _check_strings(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_strings(v, f"{path}[{i}]")


def encode_json(value: Any, what: str) -> str:
    """JSON-encode `value` strictly: no NaN or infinity, no NUL, no objects json can't map."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # NaN / infinity, or a circular reference
        raise ValidationError(f"{what} is not valid JSON: {exc}") from exc
    except TypeError as exc:
        raise ValidationError(f"{what} is not JSON-serializable: {exc}") from exc
    # json.dumps escapes every NUL as \u0000 (its output is ASCII), which jsonb refuses; the
    # walk that names the offending path runs only when that escape appears at all.
    if "\\u0000" in text:
        _check_strings(value, what)
    if len(text) > MAX_PAYLOAD_BYTES:  # ASCII: one byte per character
        raise ValidationError(
            f"{what} is {len(text)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return text


def encode_result(value: Any) -> str:
    """Results are stored as jsonb; the same strictness as arguments applies."""
    if value is None:  # most tasks return nothing
        return "null"
    return encode_json(value, "task result")


def encode_args(args: Any) -> str:
    if not isinstance(args, Mapping):
        raise ValidationError(f"task arguments must be a mapping of names to values, not {args!r}")
    for key in args:
        if not isinstance(key, str):
            raise ValidationError(f"task argument names must be strings, not {key!r}")
    return encode_json(dict(args), "task arguments")


def check_int(name: str, value: object, *, minimum: int | None = None, bits: int = 32) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{name} must be at least {minimum}, not {value}")
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValidationError(f"{name} is out of range: {value}")
    return value


def check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValidationError(f"{name} must be a finite, non-negative number, not {value!r}")
    return float(value)
