"""Runtime configuration: one table of settings, read from the environment, overridden by flags,
parsed once into typed values.

Each field of `Settings` declares one setting (`scheduler.setting.setting`): its variable, its
flag, its default and its parser. `SETTINGS` lists those declarations; the README's configuration
table and the Terraform module's environment variables are checked against it by tests, so a
setting renamed here fails those tests instead of silently drifting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

from scheduler.egress import EgressPolicy
from scheduler.errors import SchedulerError
from scheduler.logs import LogFormat
from scheduler.setting import (
    DECLARATION,
    Setting,
    collection_prefix,
    comma_list,
    duration,
    duration_or_zero,
    egress_policy,
    http_base_url,
    job_prefix,
    one_of,
    positive_number,
    setting,
    text,
    whole,
)

__all__ = ["SETTINGS", "SETTINGS_BY_ATTR", "ConfigError", "Mode", "Setting", "Settings"]


class ConfigError(SchedulerError, ValueError):
    """A setting is missing or malformed; the message names the setting."""


class Mode(StrEnum):
    """Where the clock lives (`SCION_SCHEDULER_MODE`, issue 17): one Cloud Scheduler job per
    schedule, or the schedules in Firestore and one tick job per deployment."""

    JOBS = "jobs"
    TICKS = "ticks"


@dataclass(frozen=True)
class Settings:
    """Resolved, typed configuration. Build it with `Settings.from_env()`; flags override through
    `with_overrides`. `Settings()` holds every default."""

    project: str | None = setting(
        "SCION_SCHEDULER_PROJECT", "--project", text,
        "Google Cloud project ID that holds the jobs, topic, subscription and database.")
    location: str | None = setting(
        "SCION_SCHEDULER_LOCATION", "--location", text,
        "Cloud Scheduler region for the jobs (e.g. europe-west1).",
        default="us-central1")
    topic: str | None = setting(
        "SCION_SCHEDULER_TOPIC", "--topic", text,
        "Pub/Sub topic ID that the jobs publish fires to.",
        default="scion-fires")
    subscription: str | None = setting(
        "SCION_SCHEDULER_SUBSCRIPTION", "--subscription", text,
        "Pub/Sub pull subscription ID the workers read fires from.",
        default="scion-fires-workers")
    job_prefix: str = setting(
        "SCION_SCHEDULER_JOB_PREFIX", "--job-prefix", job_prefix,
        "Prefix of the Cloud Scheduler job IDs this deployment owns; other jobs are never "
        "touched.",
        default="scion-")
    collection_prefix: str = setting(
        "SCION_SCHEDULER_COLLECTION_PREFIX", "--collection-prefix", collection_prefix,
        "Prefix of the Firestore collections: executions, the running fire of each schedule, and "
        "schedule state.",
        default="scion_")
    database: str | None = setting(
        "SCION_SCHEDULER_DATABASE", "--database", text,
        "Firestore database ID.",
        default="(default)")
    signing_key: str | None = setting(
        "SCION_SCHEDULER_SIGNING_KEY", "--signing-key", text,
        "HMAC key that signs fire messages; workers reject unsigned or forged messages when set.",
        secret=True)
    log_format: LogFormat = setting(
        "SCION_SCHEDULER_LOG_FORMAT", "--log-format", one_of(LogFormat),
        "Log output: `json` (Cloud Logging), `console` (key=value), or `auto` (json unless a "
        "TTY).",
        default="auto")
    pubsub_emulator_host: str | None = setting(
        "PUBSUB_EMULATOR_HOST", "--pubsub-emulator-host", text,
        "host:port of a Pub/Sub emulator; when set, no credentials are used.")
    firestore_emulator_host: str | None = setting(
        "FIRESTORE_EMULATOR_HOST", "--firestore-emulator-host", text,
        "host:port of a Firestore emulator; when set, no credentials are used.")
    cloud_scheduler_emulator_host: str | None = setting(
        "CLOUD_SCHEDULER_EMULATOR_HOST", "--cloud-scheduler-emulator-host", text,
        "host:port of this project's Cloud Scheduler emulator (`scion-scheduler emulator`).")
    # Ranges: Cloud Scheduler refuses a retry_count above 5, and replaces a zero min/max backoff
    # or max_doublings with its own default, which a sync would then see as drift forever.
    job_retry_count: int = setting(
        "SCION_SCHEDULER_JOB_RETRY_COUNT", "--job-retry-count", whole(0, 5),
        "Cloud Scheduler `retry_config.retry_count` of every job (0-5): how often a failed "
        "publish is retried, never past the next slot.",
        default="3")
    job_min_backoff: timedelta = setting(
        "SCION_SCHEDULER_JOB_MIN_BACKOFF", "--job-min-backoff", duration,
        "Cloud Scheduler `retry_config.min_backoff_duration` of every job (e.g. 5s).",
        default="5s")
    job_max_backoff: timedelta = setting(
        "SCION_SCHEDULER_JOB_MAX_BACKOFF", "--job-max-backoff", duration,
        "Cloud Scheduler `retry_config.max_backoff_duration` of every job (e.g. 1m).",
        default="1m")
    job_max_doublings: int = setting(
        "SCION_SCHEDULER_JOB_MAX_DOUBLINGS", "--job-max-doublings", whole(1, 16),
        "Cloud Scheduler `retry_config.max_doublings` of every job.",
        default="3")
    job_max_retry_duration: timedelta = setting(
        "SCION_SCHEDULER_JOB_MAX_RETRY_DURATION", "--job-max-retry-duration", duration_or_zero,
        "Cloud Scheduler `retry_config.max_retry_duration` of every job; 0s means limited only by "
        "the retry count.",
        default="0s")
    write_rate: float = setting(
        "SCION_SCHEDULER_WRITE_RATE", "--write-rate", positive_number,
        "Client-side limit on Cloud Scheduler writes per second during a sync (the service's "
        "quota is 500 writes per minute per project).",
        default="5")
    sync_concurrency: int = setting(
        "SCION_SCHEDULER_SYNC_CONCURRENCY", "--sync-concurrency", whole(1, 64),
        "How many Cloud Scheduler calls a sync runs at once.",
        default="8")
    api_retry_initial: timedelta = setting(
        "SCION_SCHEDULER_API_RETRY_INITIAL", "--api-retry-initial", duration,
        "First backoff after a retryable Cloud Scheduler API error (UNAVAILABLE, "
        "DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED); it doubles up to the maximum.",
        default="1s")
    api_retry_maximum: timedelta = setting(
        "SCION_SCHEDULER_API_RETRY_MAXIMUM", "--api-retry-maximum", duration,
        "Longest backoff between two attempts of one Cloud Scheduler API call.",
        default="30s")
    api_retry_timeout: timedelta = setting(
        "SCION_SCHEDULER_API_RETRY_TIMEOUT", "--api-retry-timeout", duration,
        "Total time one Cloud Scheduler API call may take, retries included.",
        default="2m")
    one_shot_grace: timedelta = setting(
        "SCION_SCHEDULER_ONE_SHOT_GRACE", "--one-shot-grace", duration_or_zero,
        "How long a one-shot (`at`) schedule's job is kept after its fire time, so that the fire "
        "can still be delivered, before a sync deletes it; longer when the schedule's catch-up "
        "window is (up to 7 days), since the job is how a sync knows not to fire a past-due "
        "one-shot again.",
        default="10m")
    api_token: str | None = setting(
        "SCION_SCHEDULER_API_TOKEN", "--api-token", text,
        "Bearer token that callers of the HTTP API (`serve`) must present.",
        secret=True)
    api_audience: tuple[str, ...] = setting(
        "SCION_SCHEDULER_API_AUDIENCE", "--api-audience", comma_list,
        "Audience(s), comma-separated, that Google-signed OIDC ID tokens presented to the HTTP "
        "API must be issued for (set together with SCION_SCHEDULER_API_ALLOWED_SA).",
        default="")
    api_allowed_sa: tuple[str, ...] = setting(
        "SCION_SCHEDULER_API_ALLOWED_SA", "--api-allowed-sa", comma_list,
        "Service-account emails, comma-separated, whose ID tokens the HTTP API accepts.",
        default="")
    hub_url: str | None = setting(
        "SCION_HUB_URL", "--hub-url", http_base_url,
        "Base URL of the Scion hub whose fire endpoint the `scion` action calls (e.g. "
        "https://hub.example.com); workers need it for schedules taken from the hub, and `hub "
        "check`/`hub pull` use it when --hub-url is not given.")
    hub_token: str | None = setting(
        "SCION_HUB_TOKEN", "--hub-token", text,
        "Bearer token the `scion` action presents to the hub; without it, a Google-signed OIDC ID "
        "token is used (on GCP). `hub check` and `hub pull` present it to the hub's API.",
        secret=True)
    hub_audience: str | None = setting(
        "SCION_HUB_AUDIENCE", "--hub-audience", text,
        "Audience of the OIDC ID token the `scion` action presents to the hub. Default: "
        "SCION_HUB_URL.")
    allowed_targets: EgressPolicy = setting(
        "SCION_SCHEDULER_ALLOWED_TARGETS", "--allowed-targets", egress_policy,
        "Where actions may send requests: URL prefixes, hosts, host patterns or networks, "
        "comma-separated (e.g. `https://hub.example.com/,*.run.app`); empty means any public "
        "address. Link-local, metadata, loopback and private addresses only when named (see "
        "Egress policy).",
        default="")
    audit_horizon: timedelta = setting(
        "SCION_SCHEDULER_AUDIT_HORIZON", "--audit-horizon", duration,
        "How far back the workers' once-a-minute audit looks for slots that were never fired or "
        "recorded (README, The audit); each is checked every minute until then.",
        default="5m")
    audit_grace: timedelta = setting(
        "SCION_SCHEDULER_AUDIT_GRACE", "--audit-grace", duration,
        "How old a slot must be before the audit counts it unaccounted for: longer than a fire "
        "takes to be published, delivered and claimed (the takeover budget).",
        default="20s")
    mode: Mode = setting(
        "SCION_SCHEDULER_MODE", "--mode", one_of(Mode),
        "Where the clock lives: `jobs` (one Cloud Scheduler job per schedule) or `ticks` (the "
        "schedules in Firestore, one tick job per deployment; README, Choosing a mode).",
        default="jobs")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 **overrides: str | None) -> Settings:
        """Every setting from `environ` (default `os.environ`; an empty variable is unset), then
        the non-None `overrides` (flags), each parsed once."""
        env = os.environ if environ is None else environ
        given: dict[str, str | None] = {s.attr: env.get(s.env) or None for s in SETTINGS}
        flags = {attr: raw for attr, raw in overrides.items() if raw is not None}
        return cls().with_overrides(**{**given, **flags})

    def with_overrides(self, **overrides: str | None) -> Settings:
        """A copy with every non-None override (the text of a flag) parsed and applied; a bad
        value is a `ConfigError` naming the setting, the value and why."""
        unknown = set(overrides) - set(SETTINGS_BY_ATTR)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        parsed: dict[str, Any] = {}
        for attr, raw in overrides.items():
            if raw is None:
                continue
            declared = SETTINGS_BY_ATTR[attr]
            try:
                parsed[attr] = declared.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{declared.env}: {exc}") from exc
        return replace(self, **parsed)

    def require(self, *attrs: str) -> None:
        """Fail with a message naming every missing setting (its variable and its flag)."""
        missing = [SETTINGS_BY_ATTR[a] for a in attrs if getattr(self, a) in (None, "")]
        if missing:
            names = ", ".join(f"{s.env} (or {s.flag})" for s in missing)
            raise ConfigError(f"missing required setting: {names}")

    def value(self, attr: str) -> str:
        """A text setting that `require` has established is present."""
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


def _declared(attr: str, declaration: Setting[Any]) -> Setting[Any]:
    return replace(declaration, attr=attr)


SETTINGS: tuple[Setting[Any], ...] = tuple(
    _declared(f.name, f.metadata[DECLARATION]) for f in fields(Settings)
)
SETTINGS_BY_ATTR: Mapping[str, Setting[Any]] = {s.attr: s for s in SETTINGS}
