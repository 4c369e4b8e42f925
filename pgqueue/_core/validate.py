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


#: One strict encoder for every payload: `json.dumps` with any option builds a new encoder
#: per call, which is a measurable part of a single enqueue's Python time. An encoder keeps
#: no state between calls, so threads can share it.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def encode_json(value: Any, what: str) -> str:
    """JSON-encode `value` strictly: no NaN or infinity, no NUL, no objects json can't map."""
    try:
        text = _ENCODER.encode(value)
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
    # Keyword arguments arrive as a dict already; any other mapping is copied into one.
    return encode_json(args if type(args) is dict else dict(args), "task arguments")


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


#: group_key: the tenant, customer or API key a job belongs to; 1 to 255 characters, no NUL.
#: The same rule is a CHECK constraint on the table.
MAX_GROUP_KEY = 255


def check_group_key(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_GROUP_KEY or "\x00" in value:
        raise ValidationError(
            f"group_key must be a string of 1-{MAX_GROUP_KEY} characters without NUL,"
            f" not {_short(value)}"
        )
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]*\.?[0-9]*)\s*([smhd])\s*")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The longest rate period: a year.
MAX_RATE_PERIOD = 366 * 86400.0


def parse_rate(name: str, value: object) -> tuple[int, float]:
    """`"20/s"` -> (20, 1.0): N starts per period. `N/s`, `N/m`, `N/h`, `N/d` or
    `N/<seconds>s` (`"100/10s"`); N at least 1. The database parses it the same way
    (`parse_rate` in 012_flow_control.sql)."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    hint = "use N/s, N/m, N/h, N/d or N/<seconds>s with N >= 1, such as '20/s' or '100/10s'"
    if match is None:
        raise ValidationError(f"invalid {name} {_short(value)}: {hint}")
    count, number, unit = int(match[1]), match[2], match[3]
    if count < 1:
        raise ValidationError(f"invalid {name} {value!r}: {hint}")
    if number and (unit != "s" or not any(c.isdigit() for c in number)):
        raise ValidationError(f"invalid {name} {value!r}: {hint}")
    period = _UNITS[unit] * (float(number) if number else 1.0)
    if not 0 < period <= MAX_RATE_PERIOD:
        raise ValidationError(f"invalid {name} {value!r}: the period must be 0-366 days")
    return count, period


def format_rate(count: int, period: float) -> str:
    """The canonical text of a rate, as the database shows it."""
    for unit, seconds in _UNITS.items():
        if period == seconds:
            return f"{count}/{unit}"
    return f"{count}/{period:g}s"
