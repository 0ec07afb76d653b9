"""Schedule documents for the model tests, the errors validation returns for them, and the
hypothesis settings of the model's property tests."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings

from scheduler.model import (
    FieldError,
    ValidationError,
)
from scheduler.validation import (
    parse_schedule,
)

PROPERTY = settings(max_examples=200, deadline=None)


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid minimal document, with fields replaced (a value of `...` removes the field)."""
    base: dict[str, Any] = {
        "id": "daily-report",
        "cron": "0 9 * * *",
        "action": {"type": "http", "url": "https://hub.example.com/api/fire"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def errors_of(raw: Any, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        parse_schedule(raw, **kwargs)
    return list(info.value.errors)


def only_error(raw: Any, **kwargs: Any) -> FieldError:
    found = errors_of(raw, **kwargs)
    assert len(found) == 1, found
    return found[0]
