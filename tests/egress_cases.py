"""The egress policy tests' shared cases: the URLs refused by default with their reasons, the
metadata server's token URL, a credential to redact, and the errors validation gives a URL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.egress import EgressPolicy
from scheduler.model import ValidationError
from scheduler.validation import parse_schedule

ROOT = Path(__file__).resolve().parent.parent
FIRE_TIME = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
PUBLIC_ONLY = EgressPolicy()
METADATA_TOKEN_URL = (
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token")
SECRET = "ya29.a0AfH6SMBsecretsecretsecret"


def url_errors(url: str, policy: EgressPolicy = PUBLIC_ONLY,
               **action: Any) -> list[tuple[str, str]]:
    raw = {"id": "ssrf", "cron": "* * * * *", "action": {"type": "http", "url": url, **action}}
    try:
        parse_schedule(raw, egress=policy)
    except ValidationError as exc:
        return [(e.field, e.reason) for e in exc.errors]
    return []


REFUSED_BY_DEFAULT = [
    (METADATA_TOKEN_URL, "link-local or metadata"),                       # metadata by IP
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata server"),  # by name
    ("http://metadata/computeMetadata/v1/", "metadata server"),
    ("http://METADATA.google.internal./x", "metadata server"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "link-local or metadata"),
    ("http://169.254.10.1/", "link-local or metadata"),                  # link-local
    ("http://[fe80::1]/", "link-local or metadata"),
    ("http://[::ffff:169.254.169.254]/", "link-local or metadata"),      # IPv4-mapped
    ("http://10.0.0.5/", "private or loopback"),                         # private
    ("http://172.16.3.4:8080/", "private or loopback"),
    ("http://192.168.1.1/", "private or loopback"),
    ("http://100.64.0.1/", "private or loopback"),                       # CGNAT
    ("http://[fc00::1]/", "private or loopback"),
    ("http://[::ffff:10.0.0.1]/", "private or loopback"),
    ("http://127.0.0.1:8087/", "private or loopback"),                   # loopback
    ("http://127.1.2.3/", "private or loopback"),
    ("http://[::1]/", "private or loopback"),
    ("http://0.0.0.0/", "private or loopback"),
    ("http://localhost:8080/", "loopback"),
    ("http://2130706433/", "private or loopback"),                      # legacy IPv4 forms
    ("http://0xa9fea9fe/", "link-local or metadata"),
    ("http://127.1/", "private or loopback"),
]
