"""What of a target's answer may be kept: a short prefix, with anything like a credential removed.

A target's response text reaches the execution history (an action's error or detail) and the
logs. A target may echo what it was sent (our bearer token) or answer with secrets of its own
(a metadata server's access token, an API key in a URL), so every such text goes through
`redact`, and a response body through `excerpt`, which keeps at most `EXCERPT_CHARS` of it. The
patterns match a cut-off token too, so a prefix never keeps the start of one.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

EXCERPT_CHARS = 200
# A body is scanned only this far: the excerpt is far shorter, and redaction stays cheap.
_SCAN_CHARS = 8 * 1024
REDACTED = "[REDACTED]"

_SECRET_KEYS = (r"access_token|id_token|refresh_token|token|client_secret|secret|password|"
                r"passwd|api[_-]?key|apikey|key|signature|credentials?")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
                re.S), REDACTED),
    (re.compile(r"\b(Bearer)(\s+)[A-Za-z0-9._~+/=-]+", re.I), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(Basic)(\s+)[A-Za-z0-9+/=]{8,}"), rf"\1\2{REDACTED}"),
    # "access_token": "…", access_token=…, 'key': '…', key=… (JSON, forms, query strings);
    # not a URL's last path segment (".../token: refused" names a URL, it holds no secret)
    (re.compile(rf"""(["']?(?<![\w/-])(?:{_SECRET_KEYS})\b["']?\s*[:=]\s*["']?)"""
                r"""[^"'\s&,;}]+""", re.I), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(\.[A-Za-z0-9_-]*){0,2}"), REDACTED),  # a JWT
    (re.compile(r"\bAIza[0-9A-Za-z_-]{4,}"), REDACTED),  # a Google API key
    (re.compile(r"\bya29\.[0-9A-Za-z_.-]+"), REDACTED),  # a Google OAuth access token
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{12,}"), REDACTED),  # an AWS access key ID
)
# Log fields that may carry a target's answer or a URL with a key in it.
LOG_FIELDS = ("error", "detail", "url", "reason", "exception")


def redact(text: str) -> str:
    """`text` with every credential-like part replaced by `[REDACTED]`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """What history and logs keep of a response body: whitespace collapsed, redacted, at most
    `limit` characters (then `...`)."""
    kept = redact(" ".join(text[:_SCAN_CHARS].split()))
    return kept if len(kept) <= limit else kept[:limit] + "..."


def redact_log_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: `redact` the fields of `LOG_FIELDS` that are text."""
    for key in LOG_FIELDS:
        value = event.get(key)
        if isinstance(value, str):
            event[key] = redact(value)
    return event
