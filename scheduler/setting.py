"""One setting's declaration and the parsers of setting values.

A setting is declared once, as a field of `scheduler.config.Settings`, with `setting(...)`: its
environment variable, its flag, its description, its default (as the README writes it) and the
parser that turns its text into the typed value every caller reads. A parser raises `ValueError`
with the reason; `Settings` adds the setting's name to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from scheduler.egress import EgressPolicy
from scheduler.model import parse_duration

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

# The key of a `Settings` field's metadata that holds its `Setting`.
DECLARATION = "setting"

_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One configuration setting: its attribute on `Settings`, its environment variable and flag,
    its default as text, and the parser of its values."""

    env: str
    flag: str
    description: str
    parse: Callable[[str], T]
    default: str | None = None
    secret: bool = False
    attr: str = ""


@overload
def setting(env: str, flag: str, parse: Callable[[str], T], description: str, *, default: str,
            secret: bool = False) -> T: ...


@overload
def setting(env: str, flag: str, parse: Callable[[str], T], description: str, *,
            default: None = None, secret: bool = False) -> T | None: ...


def setting(env: str, flag: str, parse: Callable[[str], T], description: str, *,
            default: str | None = None, secret: bool = False) -> Any:
    """A `Settings` field declaring one setting; its default is `parse(default)`, or None."""
    declared = Setting(env, flag, description, parse, default, secret)
    value = None if default is None else parse(default)
    # A secret stays out of the repr of `Settings`, and so out of logs and tracebacks.
    return field(default=value, repr=not secret, metadata={DECLARATION: declared})


# --- parsers --------------------------------------------------------------------------------------

def text(raw: str) -> str | None:
    """Free text; an empty value is no value."""
    return raw or None


def comma_list(raw: str) -> tuple[str, ...]:
    """Comma-separated items, blanks dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def job_prefix(raw: str) -> str:
    """The prefix of the job IDs a deployment owns."""
    # fullmatch: with `match`, `$` also matches before a trailing line break.
    if not _ID_RE.fullmatch(raw):
        raise ValueError(
            f"must be a non-empty string of letters, digits, '-' and '_' (got {raw!r}); an empty "
            "prefix would claim every job in the location")
    if len(raw) > 100:
        raise ValueError("must be at most 100 characters")
    return raw


def collection_prefix(raw: str) -> str:
    """The prefix of the Firestore collections (may be empty)."""
    if not _PREFIX_RE.fullmatch(raw):
        raise ValueError(f"may hold only letters, digits, '-' and '_' (got {raw!r})")
    return raw


def http_base_url(raw: str) -> str:
    """An absolute http(s) URL without query or fragment."""
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"must be the hub's absolute http(s) base URL (got {raw!r})")
    return raw


def one_of(kind: type[E]) -> Callable[[str], E]:
    """A member of the enum `kind`, by value."""
    def parse(raw: str) -> E:
        try:
            return kind(raw)
        except ValueError:
            names = [member.value for member in kind]
            choices = f"{', '.join(names[:-1])} or {names[-1]}"
            raise ValueError(f"must be {choices} (got {raw!r})") from None
    return parse


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high`."""
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high} (got {raw!r})")
        return value
    return parse


def positive_number(raw: str) -> float:
    """A finite number above zero."""
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ValueError(f"must be a positive number (got {raw!r})")
    return value


def duration(raw: str) -> timedelta:
    """A duration longer than zero, e.g. `5s`, `1m30s`, `PT10M` or seconds."""
    value = parse_duration(raw)
    if value <= timedelta(0):
        raise ValueError(f"must be longer than zero (got {raw!r})")
    return value


def duration_or_zero(raw: str) -> timedelta:
    """A duration, zero included."""
    return parse_duration(raw)


def egress_policy(raw: str) -> EgressPolicy:
    """Where actions may send requests (`scheduler.egress`)."""
    return EgressPolicy.parse(raw)
