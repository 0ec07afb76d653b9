"""Runtime configuration: one table of settings, read from the environment, overridden by flags.

`SETTINGS` is the single source of truth for every setting's name. The README's configuration
table and the Terraform module's environment variables are checked against it by tests, so a
setting renamed here fails those tests instead of silently drifting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from scheduler.egress import EgressPolicy
from scheduler.model import parse_duration


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the setting."""


@dataclass(frozen=True)
class Setting:
    """One configuration setting: its attribute on `Settings`, its environment variable and flag."""

    attr: str
    env: str
    flag: str
    description: str
    default: str | None = None
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "project",
        "SCION_SCHEDULER_PROJECT",
        "--project",
        "Google Cloud project ID that holds the jobs, topic, subscription and database.",
    ),
    Setting(
        "location",
        "SCION_SCHEDULER_LOCATION",
        "--location",
        "Cloud Scheduler region for the jobs (e.g. europe-west1).",
        "us-central1",
    ),
    Setting(
        "topic",
        "SCION_SCHEDULER_TOPIC",
        "--topic",
        "Pub/Sub topic ID that the jobs publish fires to.",
        "scion-fires",
    ),
    Setting(
        "subscription",
        "SCION_SCHEDULER_SUBSCRIPTION",
        "--subscription",
        "Pub/Sub pull subscription ID the workers read fires from.",
        "scion-fires-workers",
    ),
    Setting(
        "job_prefix",
        "SCION_SCHEDULER_JOB_PREFIX",
        "--job-prefix",
        "Prefix of the Cloud Scheduler job IDs this deployment owns; other jobs are never touched.",
        "scion-",
    ),
    Setting(
        "collection_prefix",
        "SCION_SCHEDULER_COLLECTION_PREFIX",
        "--collection-prefix",
        (
            "Prefix of the Firestore collections: executions, the running fire of each "
            "schedule, and schedule state."
        ),
        "scion_",
    ),
    Setting(
        "database", "SCION_SCHEDULER_DATABASE", "--database", "Firestore database ID.", "(default)"
    ),
    Setting(
        "signing_key",
        "SCION_SCHEDULER_SIGNING_KEY",
        "--signing-key",
        "HMAC key that signs fire messages; workers reject unsigned or forged messages when set.",
        secret=True,
    ),
    Setting(
        "log_format",
        "SCION_SCHEDULER_LOG_FORMAT",
        "--log-format",
        "Log output: `json` (Cloud Logging), `console` (key=value), or `auto` (json unless a TTY).",
        "auto",
    ),
    Setting(
        "pubsub_emulator_host",
        "PUBSUB_EMULATOR_HOST",
        "--pubsub-emulator-host",
        "host:port of a Pub/Sub emulator; when set, no credentials are used.",
    ),
    Setting(
        "firestore_emulator_host",
        "FIRESTORE_EMULATOR_HOST",
        "--firestore-emulator-host",
        "host:port of a Firestore emulator; when set, no credentials are used.",
    ),
    Setting(
        "cloud_scheduler_emulator_host",
        "CLOUD_SCHEDULER_EMULATOR_HOST",
        "--cloud-scheduler-emulator-host",
        "host:port of this project's Cloud Scheduler emulator (`scion-scheduler emulator`).",
    ),
    Setting(
        "job_retry_count",
        "SCION_SCHEDULER_JOB_RETRY_COUNT",
        "--job-retry-count",
        "Cloud Scheduler `retry_config.retry_count` of every job (0-5): how often a failed "
        "publish is retried, never past the next slot.",
        "3",
    ),
    Setting(
        "job_min_backoff",
        "SCION_SCHEDULER_JOB_MIN_BACKOFF",
        "--job-min-backoff",
        "Cloud Scheduler `retry_config.min_backoff_duration` of every job (e.g. 5s).",
        "5s",
    ),
    Setting(
        "job_max_backoff",
        "SCION_SCHEDULER_JOB_MAX_BACKOFF",
        "--job-max-backoff",
        "Cloud Scheduler `retry_config.max_backoff_duration` of every job (e.g. 1m).",
        "1m",
    ),
    Setting(
        "job_max_doublings",
        "SCION_SCHEDULER_JOB_MAX_DOUBLINGS",
        "--job-max-doublings",
        "Cloud Scheduler `retry_config.max_doublings` of every job.",
        "3",
    ),
    Setting(
        "job_max_retry_duration",
        "SCION_SCHEDULER_JOB_MAX_RETRY_DURATION",
        "--job-max-retry-duration",
        "Cloud Scheduler `retry_config.max_retry_duration` of every job; 0s means limited only "
        "by the retry count.",
        "0s",
    ),
    Setting(
        "write_rate",
        "SCION_SCHEDULER_WRITE_RATE",
        "--write-rate",
        "Client-side limit on Cloud Scheduler writes per second during a sync (the service's "
        "quota is 500 writes per minute per project).",
        "5",
    ),
    Setting(
        "sync_concurrency",
        "SCION_SCHEDULER_SYNC_CONCURRENCY",
        "--sync-concurrency",
        "How many Cloud Scheduler calls a sync runs at once.",
        "8",
    ),
    Setting(
        "api_retry_initial",
        "SCION_SCHEDULER_API_RETRY_INITIAL",
        "--api-retry-initial",
        "First backoff after a retryable Cloud Scheduler API error (UNAVAILABLE, "
        "DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED); it doubles up to the maximum.",
        "1s",
    ),
    Setting(
        "api_retry_maximum",
        "SCION_SCHEDULER_API_RETRY_MAXIMUM",
        "--api-retry-maximum",
        "Longest backoff between two attempts of one Cloud Scheduler API call.",
        "30s",
    ),
    Setting(
        "api_retry_timeout",
        "SCION_SCHEDULER_API_RETRY_TIMEOUT",
        "--api-retry-timeout",
        "Total time one Cloud Scheduler API call may take, retries included.",
        "2m",
    ),
    Setting(
        "one_shot_grace",
        "SCION_SCHEDULER_ONE_SHOT_GRACE",
        "--one-shot-grace",
        "How long a one-shot (`at`) schedule's job is kept after its fire time, so that the "
        "fire can still be delivered, before a sync deletes it; longer when the schedule's "
        "catch-up window is (up to 7 days), since the job is how a sync knows not to fire a "
        "past-due one-shot again.",
        "10m",
    ),
    Setting(
        "api_token",
        "SCION_SCHEDULER_API_TOKEN",
        "--api-token",
        "Bearer token that callers of the HTTP API (`serve`) must present.",
        secret=True,
    ),
    Setting(
        "api_audience",
        "SCION_SCHEDULER_API_AUDIENCE",
        "--api-audience",
        "Audience(s), comma-separated, that Google-signed OIDC ID tokens presented to the HTTP "
        "API must be issued for (set together with SCION_SCHEDULER_API_ALLOWED_SA).",
    ),
    Setting(
        "api_allowed_sa",
        "SCION_SCHEDULER_API_ALLOWED_SA",
        "--api-allowed-sa",
        "Service-account emails, comma-separated, whose ID tokens the HTTP API accepts.",
    ),
    Setting(
        "hub_url",
        "SCION_HUB_URL",
        "--hub-url",
        "Base URL of the Scion hub whose fire endpoint the `scion` action calls (e.g. "
        "https://hub.example.com); workers need it for schedules taken from the hub, and "
        "`hub check`/`hub pull` use it when --hub-url is not given.",
    ),
    Setting(
        "hub_token",
        "SCION_HUB_TOKEN",
        "--hub-token",
        "Bearer token the `scion` action presents to the hub; without it, a Google-signed OIDC "
        "ID token is used (on GCP). `hub check` and `hub pull` present it to the hub's API.",
        secret=True,
    ),
    Setting(
        "hub_audience",
        "SCION_HUB_AUDIENCE",
        "--hub-audience",
        "Audience of the OIDC ID token the `scion` action presents to the hub. Default: "
        "SCION_HUB_URL.",
    ),
    Setting(
        "allowed_targets",
        "SCION_SCHEDULER_ALLOWED_TARGETS",
        "--allowed-targets",
        "Where actions may send requests: URL prefixes, hosts, host patterns or networks, "
        "comma-separated (e.g. `https://hub.example.com/,*.run.app`); empty means any public "
        "address. Link-local, metadata, loopback and private addresses only when named (see "
        "Egress policy).",
    ),
    Setting(
        "audit_horizon",
        "SCION_SCHEDULER_AUDIT_HORIZON",
        "--audit-horizon",
        "How far back the workers' once-a-minute audit looks for slots that were never "
        "fired or recorded (README, The audit); each is checked every minute until then.",
        "5m",
    ),
    Setting(
        "audit_grace",
        "SCION_SCHEDULER_AUDIT_GRACE",
        "--audit-grace",
        "How old a slot must be before the audit counts it unaccounted for: longer than a "
        "fire takes to be published, delivered and claimed (the takeover budget).",
        "20s",
    ),
)

SETTINGS_BY_ATTR: Mapping[str, Setting] = {s.attr: s for s in SETTINGS}

# Ranges of the numeric settings. Cloud Scheduler refuses a retry_count above 5, and replaces a
# zero min/max backoff or max_doublings with its own default, which a sync would then see as
# drift forever.
_INTEGERS: Mapping[str, tuple[int, int]] = {
    "job_retry_count": (0, 5), "job_max_doublings": (1, 16), "sync_concurrency": (1, 64),
}
_NUMBERS: tuple[str, ...] = ("write_rate",)
_DURATIONS: tuple[str, ...] = (
    "job_min_backoff", "job_max_backoff", "job_max_retry_duration", "api_retry_initial",
    "api_retry_maximum", "api_retry_timeout", "one_shot_grace", "audit_horizon", "audit_grace",
)
_ZERO_DURATIONS = frozenset({"job_max_retry_duration", "one_shot_grace"})

_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with `Settings.from_env()` (which fills the defaults of
    `SETTINGS`); flags override through `with_overrides`."""

    project: str | None = None
    location: str | None = None
    topic: str | None = None
    subscription: str | None = None
    job_prefix: str | None = None
    collection_prefix: str | None = None
    database: str | None = None
    signing_key: str | None = None
    log_format: str | None = None
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None
    cloud_scheduler_emulator_host: str | None = None
    job_retry_count: str | None = None
    job_min_backoff: str | None = None
    job_max_backoff: str | None = None
    job_max_doublings: str | None = None
    job_max_retry_duration: str | None = None
    write_rate: str | None = None
    sync_concurrency: str | None = None
    api_retry_initial: str | None = None
    api_retry_maximum: str | None = None
    api_retry_timeout: str | None = None
    one_shot_grace: str | None = None
    api_token: str | None = None
    api_audience: str | None = None
    api_allowed_sa: str | None = None
    hub_url: str | None = None
    hub_token: str | None = None
    hub_audience: str | None = None
    allowed_targets: str | None = None
    audit_horizon: str | None = None
    audit_grace: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `environ` (default `os.environ`); non-None `overrides` win."""
        env = os.environ if environ is None else environ
        values: dict[str, str | None] = {}
        for setting in SETTINGS:
            raw = env.get(setting.env)
            values[setting.attr] = raw if raw not in (None, "") else setting.default
        settings = cls(**values)
        return settings.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with every non-None override applied (flags given on the command line)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in overrides.items() if v is not None}
        result = replace(self, **given)
        result.validate()
        return result

    def validate(self) -> None:
        """Check the format of the settings that are set (not whether required ones are present)."""
        # fullmatch: with `match`, `$` also matches before a trailing line break.
        if self.job_prefix is not None and not _ID_RE.fullmatch(self.job_prefix):
            raise ConfigError(
                "SCION_SCHEDULER_JOB_PREFIX must be a non-empty string of letters, digits, "
                "'-' and '_' "
                f"(got {self.job_prefix!r}); an empty prefix would claim every job in the location"
            )
        if self.job_prefix is not None and len(self.job_prefix) > 100:
            raise ConfigError("SCION_SCHEDULER_JOB_PREFIX must be at most 100 characters")
        if self.collection_prefix is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]*", self.collection_prefix
        ):
            raise ConfigError(
                "SCION_SCHEDULER_COLLECTION_PREFIX may hold only letters, digits, '-' and '_' "
                f"(got {self.collection_prefix!r})"
            )
        if self.log_format not in (None, "auto", "json", "console"):
            raise ConfigError(
                "SCION_SCHEDULER_LOG_FORMAT must be auto, json or console (got "
                f"{self.log_format!r})"
            )
        for attr in _INTEGERS:
            if getattr(self, attr) is not None:
                self.integer(attr)
        for attr in _NUMBERS:
            if getattr(self, attr) is not None:
                self.number(attr)
        for attr in _DURATIONS:
            if getattr(self, attr) is not None:
                self.duration(attr)
        self._validate_hub_url()
        self.egress_policy()

    def _validate_hub_url(self) -> None:
        if self.hub_url is None:
            return
        try:
            parts = urlsplit(self.hub_url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            parts = urlsplit("")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
        ):
            raise ConfigError(
                f"SCION_HUB_URL must be the hub's absolute http(s) base URL (got {self.hub_url!r})"
            )

    def egress_policy(self) -> EgressPolicy:
        """The parsed `allowed_targets`: where actions may send requests."""
        try:
            return EgressPolicy.parse(self.allowed_targets)
        except ValueError as exc:
            raise ConfigError(f"SCION_SCHEDULER_ALLOWED_TARGETS: {exc}") from exc

    def _raw(self, attr: str) -> str:
        raw = getattr(self, attr)
        if raw in (None, ""):
            raw = SETTINGS_BY_ATTR[attr].default
        return str(raw)

    def integer(self, attr: str) -> int:
        """A whole-number setting (its default when unset), checked against its allowed range."""
        low, high = _INTEGERS[attr]
        raw = self._raw(attr)
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise ConfigError(
                f"{SETTINGS_BY_ATTR[attr].env} must be a whole number from {low} to "
                f"{high} (got {raw!r})"
            )
        return value

    def number(self, attr: str) -> float:
        """A positive numeric setting (its default when unset)."""
        raw = self._raw(attr)
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if not 0 < value < float("inf"):
            raise ConfigError(
                f"{SETTINGS_BY_ATTR[attr].env} must be a positive number (got {raw!r})"
            )
        return value

    def duration(self, attr: str) -> timedelta:
        """A duration setting (its default when unset), e.g. `5s`, `1m30s`, `PT10M` or seconds."""
        raw = self._raw(attr)
        allow_zero = attr in _ZERO_DURATIONS
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(f"{SETTINGS_BY_ATTR[attr].env}: {exc}") from exc
        if not allow_zero and value <= timedelta(0):
            raise ConfigError(
                f"{SETTINGS_BY_ATTR[attr].env} must be longer than zero (got {raw!r})"
            )
        return value

    def require(self, *attrs: str) -> None:
        """Fail with a message naming every missing setting (its variable and its flag)."""
        missing = [SETTINGS_BY_ATTR[a] for a in attrs if getattr(self, a) in (None, "")]
        if missing:
            names = ", ".join(f"{s.env} (or {s.flag})" for s in missing)
            raise ConfigError(f"missing required setting: {names}")

    def value(self, attr: str) -> str:
        """Return a setting that `require` has established is present."""
        raw = getattr(self, attr)
        if raw in (None, ""):
            self.require(attr)
        return str(raw)

    @property
    def location_path(self) -> str:
        """`projects/P/locations/L`, the parent of every job."""
        return f"projects/{self.value('project')}/locations/{self.value('location')}"

    @property
    def topic_path(self) -> str:
        """`projects/P/topics/T`, the target of every job."""
        return f"projects/{self.value('project')}/topics/{self.value('topic')}"

    @property
    def subscription_path(self) -> str:
        """`projects/P/subscriptions/S`, the workers' pull subscription."""
        return f"projects/{self.value('project')}/subscriptions/{self.value('subscription')}"
