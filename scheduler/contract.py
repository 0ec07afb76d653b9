"""The fire contract: the Pub/Sub message a Cloud Scheduler job publishes and a worker decodes.

Cloud Scheduler publishes the same data and attributes at every slot and puts no fire time in
them, so the message carries what the worker needs to derive the fire time without a lookup
(cron and time zone) and to act without a lookup (the action and its policies).

Attributes (all strings):
    scion-format   format version, "1"
    schedule-id    the hub's schedule ID, verbatim; tick mode's reserved IDs
                   (`scheduler.reserved`) go with the `tick` action only, and it with them only
    fingerprint    `Schedule.fingerprint()` of the definition the message was built from
    cron, timezone the effective cron and time zone (a one-shot's are its job's minute, in UTC)
    cron-dialect   "robfig" for a schedule handed over from the Scion hub, whose `cron` is the
                   hub's own expression (the job runs its translation); absent for unix-cron
    at             for a one-shot, its exact fire time (RFC 3339, to the microsecond)
    trigger        "scheduled", "manual" for a run-now, "audit" for a slot the workers' audit
                   found never delivered (`worker.audit`), or "expired" for a one-shot's fire that a
                   sync publishes once after its `at` has passed (see below)
    fire-time      for a manual run or an audit fire: its exact fire time; also on a scheduled
                   fire that tick mode publishes (`scheduler.ticks`), the slot it is for (one of
                   the schedule's own slots, so its execution ID is its job's fire's)
    signature      optional, "v1=" + hex HMAC-SHA256 over the other attributes and the data

Data: JSON `{"action": {...}, "overlap", "catchup", "catchup_window" (seconds),
"max_attempts", "labels"}`.

A manual run carries an exact, sub-second fire time and its execution ID includes the trigger,
so it is never deduplicated against a scheduled slot. The execution ID of a scheduled fire is
derived from (schedule ID, fire time) alone, so every redelivery of a fire maps to one ID.

An expired fire is the hub's `expired` event (a pending event found past its `fireAt`, fired
once however late: scion pkg/hub/scheduler.go:237-247, :296-299, pkg/store/models.go:1060): the
one-shot's own fire, only late, so its fire time is `at` and its execution ID is the scheduled
fire's. Whichever delivery claims first runs; every other is a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from scheduler.cron import (
    CRON_DIALECTS,
    DEFAULT_SKEW,
    CronDialect,
    CronError,
    fire_time_for,
    is_slot,
    is_valid_timezone,
    validate_cron,
)
from scheduler.errors import SchedulerError
from scheduler.model import (
    CATCHUP_POLICIES,
    OVERLAP_POLICIES,
    Action,
    Catchup,
    Overlap,
    Schedule,
    format_instant,
    one_shot_slot,
    parse_instant,
)
from scheduler.reserved import TICK_ACTION_TYPE, is_tick_schedule

FORMAT_VERSION = "1"
Trigger = Literal["scheduled", "manual", "expired", "audit"]
TRIGGERS: tuple[str, ...] = ("scheduled", "manual", "expired", "audit")
# Triggers whose fire is the schedule's own slot, and so shares its execution ID.
_SLOT_TRIGGERS = frozenset({"scheduled", "expired", "audit"})
# Triggers whose message carries its exact fire time: a run-now's, and the slot an audit fire
# publishes again (so its claim dedupes it against the original, if that arrives after all).
EXACT_TRIGGERS = frozenset({"manual", "audit"})

# Cloud Scheduler stores at most 1 MB per job including about 1 KB of request overhead
# (https://cloud.google.com/scheduler/quotas); the fire message is the bulk of a job.
MAX_MESSAGE_BYTES = 1_000_000 - 4_096

ATTR_FORMAT = "scion-format"
ATTR_SCHEDULE_ID = "schedule-id"
ATTR_FINGERPRINT = "fingerprint"
ATTR_CRON = "cron"
ATTR_TIMEZONE = "timezone"
ATTR_CRON_DIALECT = "cron-dialect"
ATTR_AT = "at"
ATTR_TRIGGER = "trigger"
ATTR_FIRE_TIME = "fire-time"
ATTR_SIGNATURE = "signature"
_SIGNATURE_SCHEME = "v1="
# The signature attribute's bytes: its name, the scheme and an HMAC-SHA256 in hex.
_SIGNATURE_SIZE = len(ATTR_SIGNATURE) + len(_SIGNATURE_SCHEME) + 2 * hashlib.sha256().digest_size
# Longer than any real window and short of timedelta's limit (json.loads also yields NaN and
# Infinity, which fail the range check).
_MAX_SECONDS = 10**12
_SIGNED_ATTRIBUTES = frozenset({
    ATTR_FORMAT, ATTR_SCHEDULE_ID, ATTR_FINGERPRINT, ATTR_CRON, ATTR_TIMEZONE, ATTR_AT,
    ATTR_TRIGGER, ATTR_FIRE_TIME, ATTR_CRON_DIALECT,
})


class ContractError(SchedulerError, ValueError):
    """A message that is not a valid fire: malformed, of an unknown format, or not verifiable."""


@dataclass(frozen=True)
class Message:
    """A Pub/Sub message's payload: what a job publishes, or what a worker received."""

    data: bytes
    attributes: Mapping[str, str]

    @property
    def size(self) -> int:
        """Bytes counted against the job size limit."""
        return len(self.data) + sum(
            len(k.encode()) + len(v.encode()) for k, v in self.attributes.items()
        )


@dataclass(frozen=True)
class Fire:
    """A decoded fire message: the schedule's runtime definition plus the trigger."""

    schedule_id: str
    fingerprint: str
    cron: str
    timezone: str
    action: Action
    trigger: Trigger = "scheduled"
    at: datetime | None = None
    fire_time: datetime | None = None
    overlap: Overlap = "skip"
    catchup: Catchup = "all"
    catchup_window: timedelta = timedelta(minutes=15)
    max_attempts: int = 5
    labels: Mapping[str, str] = field(default_factory=dict)
    cron_dialect: CronDialect = CronDialect.UNIX

    @property
    def effective_cron(self) -> str:
        """The cron the job runs on (makes a `Fire` a `scheduler.cron.CronSpec`)."""
        return self.cron

    @property
    def effective_timezone(self) -> str:
        """The time zone the cron is evaluated in."""
        return self.timezone

    @property
    def one_shot(self) -> bool:
        """True when the schedule fires once, at `at`."""
        return self.at is not None

    def derive_fire_time(self, published_at: datetime, skew: timedelta = DEFAULT_SKEW) -> datetime:
        """The fire time this delivery is for: exact when the message carries it (a manual run, an
        audit fire, a tick's fire), `at` for
        an expired one-shot, else the cron slot that the publish time belongs to (see
        `scheduler.cron.fire_time_for`), read in the cron's dialect: a hub schedule's publish
        maps to the hub's own slot. A one-shot's job
        fires at its slot, ahead of `at`, and that slot stands for `at` itself: the worker holds
        the fire until then. (A job written before the slot moved ahead fires at `at`'s own
        minute, which stands for `at` too.)"""
        if self.fire_time is not None:
            return self.fire_time
        if self.trigger == "expired" and self.at is not None:
            return self.at
        slot = fire_time_for(self, published_at, skew)
        if self.at is not None and slot in (one_shot_slot(self.at), self.at):
            return self.at
        return slot


def execution_id(schedule_id: str, fire_time: datetime, trigger: str = "scheduled") -> str:
    """Stable ID of one execution: the same for every delivery of the same fire."""
    parts = [schedule_id, format_instant(fire_time)]
    if trigger not in _SLOT_TRIGGERS:
        parts.append(trigger)
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def _payload(schedule: Schedule) -> dict[str, Any]:
    return {
        "action": schedule.action.to_dict(),
        "overlap": schedule.overlap,
        "catchup": schedule.catchup,
        "catchup_window": schedule.catchup_window.total_seconds(),
        "max_attempts": schedule.max_attempts,
        "labels": dict(schedule.labels),
    }


def _canonical(data: bytes, attributes: Mapping[str, str]) -> bytes:
    # Only the contract's own attributes are signed, and only they are ever read: publishers may
    # add others (the Pub/Sub client's `googclient_*` trace context) after signing. They are
    # signed as one line of JSON, which escapes every line break, so that no text can move
    # between two values, or between the values and the data, under the same signature.
    signed = sorted((k, v) for k, v in attributes.items() if k in _SIGNED_ATTRIBUTES)
    return json.dumps(signed, separators=(",", ":")).encode("ascii") + b"\n" + data


def sign(data: bytes, attributes: Mapping[str, str], key: str) -> str:
    """The signature attribute value for a message."""
    mac = hmac.new(key.encode("utf-8"), _canonical(data, attributes), hashlib.sha256)
    return _SIGNATURE_SCHEME + mac.hexdigest()


def build_message(
    schedule: Schedule,
    *,
    signing_key: str | None = None,
    trigger: Trigger = "scheduled",
    fire_time: datetime | None = None,
) -> Message:
    """The message a schedule's job publishes (or, with `trigger="manual"` and a `fire_time`,
    the message of a run-now; with `trigger="expired"`, a past one-shot's late fire; with
    `trigger="audit"` and the slot's `fire_time`, a slot that was never delivered)."""
    if trigger in EXACT_TRIGGERS and fire_time is None:
        raise ValueError("a manual or audit trigger needs an exact fire_time")
    if fire_time is not None and trigger not in EXACT_TRIGGERS | {"scheduled"}:
        raise ValueError(f"a {trigger} fire has no exact fire_time")
    if trigger == "expired" and schedule.at is None:
        raise ValueError("only a one-shot has an expired fire")
    data = json.dumps(_payload(schedule), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    attributes = {
        ATTR_FORMAT: FORMAT_VERSION,
        ATTR_SCHEDULE_ID: schedule.id,
        ATTR_FINGERPRINT: schedule.fingerprint(),
        ATTR_CRON: schedule.effective_cron,
        ATTR_TIMEZONE: schedule.effective_timezone,
        ATTR_TRIGGER: trigger,
    }
    if schedule.cron_dialect is not CronDialect.UNIX:
        attributes[ATTR_CRON_DIALECT] = schedule.cron_dialect.value
    if schedule.at is not None:
        attributes[ATTR_AT] = format_instant(schedule.at)
    if fire_time is not None:
        attributes[ATTR_FIRE_TIME] = format_instant(fire_time)
    if signing_key:
        attributes[ATTR_SIGNATURE] = sign(data, attributes, signing_key)
    return Message(data, attributes)


def slot_messages(schedule: Schedule, fire_times: Sequence[datetime], *,
                  signing_key: str | None = None) -> list[Message]:
    """`build_message(schedule, signing_key=..., fire_time=t)` for each of `fire_times`: a tick's
    scheduled fires (`scheduler.ticks`). The data and the other attributes are built once, and
    only the fire time and the signature are made per slot."""
    if not fire_times:
        return []
    template = build_message(schedule)
    messages = []
    for fire_time in fire_times:
        attributes = dict(template.attributes)
        attributes[ATTR_FIRE_TIME] = format_instant(fire_time)
        if signing_key:
            attributes[ATTR_SIGNATURE] = sign(template.data, attributes, signing_key)
        messages.append(Message(template.data, attributes))
    return messages


def message_size(schedule: Schedule) -> int:
    """Size in bytes of the schedule's fire message, signature included."""
    # The signature's size is the same whatever the key and message: not computed (every
    # schedule's validation asks, a tick's for every document it reads).
    return build_message(schedule).size + _SIGNATURE_SIZE


def _required(attributes: Mapping[str, str], name: str) -> str:
    value = attributes.get(name)
    if not value:
        raise ContractError(f"missing attribute {name!r}")
    return value


def _instant(attributes: Mapping[str, str], name: str) -> datetime | None:
    raw = attributes.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw)
    except ValueError as exc:
        raise ContractError(f"attribute {name!r}: {exc}") from exc


def _verify(data: bytes, attributes: Mapping[str, str], signing_key: str | None) -> None:
    """Refuse a message of another format version, or one not signed with `signing_key`."""
    version = attributes.get(ATTR_FORMAT)
    if version != FORMAT_VERSION:
        raise ContractError(
            f"unknown or missing format version {version!r} (expected {FORMAT_VERSION!r})"
        )
    if signing_key:
        signature = attributes.get(ATTR_SIGNATURE)
        if not signature:
            raise ContractError("unsigned message, but a signing key is configured")
        # As bytes: compare_digest raises TypeError for a str that is not ASCII.
        expected = sign(data, attributes, signing_key).encode("utf-8")
        if not hmac.compare_digest(signature.encode("utf-8"), expected):
            raise ContractError(
                "bad signature: the message was not signed with this deployment's key"
            )


def _trigger(attributes: Mapping[str, str]) -> tuple[Trigger, datetime | None]:
    """The trigger and, for the triggers that carry one, the exact fire time."""
    trigger = _required(attributes, ATTR_TRIGGER)
    if trigger not in TRIGGERS:
        raise ContractError(f"unknown trigger {trigger!r}")
    fire_time = _instant(attributes, ATTR_FIRE_TIME)
    if trigger in EXACT_TRIGGERS and fire_time is None:
        raise ContractError("a manual or audit trigger must carry fire-time")
    if fire_time is not None and trigger not in EXACT_TRIGGERS | {"scheduled"}:
        raise ContractError(f"a {trigger} fire must not carry fire-time")
    if trigger == "expired" and ATTR_AT not in attributes:
        raise ContractError("an expired trigger is a one-shot's: it must carry at")
    return trigger, fire_time  # type: ignore[return-value]  # checked against TRIGGERS above


def _data_fields(data: bytes) -> dict[str, Any]:
    """The action and the policies the data holds, as `Fire`'s fields."""
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"data is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), dict):
        raise ContractError("data must be a JSON object with an `action` object")
    action_raw = dict(payload["action"])
    action_type = action_raw.pop("type", None)
    if not isinstance(action_type, str) or not action_type:
        raise ContractError("action has no type")
    overlap = payload.get("overlap", "skip")
    catchup = payload.get("catchup", "all")
    max_attempts = payload.get("max_attempts", 5)
    window = payload.get("catchup_window", 900)
    labels = payload.get("labels", {})
    if overlap not in OVERLAP_POLICIES or catchup not in CATCHUP_POLICIES:
        raise ContractError(f"bad policy: overlap={overlap!r} catchup={catchup!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ContractError(f"bad max_attempts {max_attempts!r}")
    if (
        isinstance(window, bool)
        or not isinstance(window, int | float)
        or not 0 <= window < _MAX_SECONDS
    ):
        raise ContractError(f"bad catchup_window {window!r}")
    if not isinstance(labels, dict):
        raise ContractError("labels must be an object")
    return {
        "action": Action(action_type, action_raw), "overlap": overlap, "catchup": catchup,
        "catchup_window": timedelta(seconds=window), "max_attempts": max_attempts,
        "labels": {str(k): str(v) for k, v in labels.items()},
    }


def _cron(attributes: Mapping[str, str]) -> tuple[str, str, CronDialect]:
    """The cron, its time zone and its dialect, each checked."""
    cron = _required(attributes, ATTR_CRON)
    timezone = _required(attributes, ATTR_TIMEZONE)
    dialect = attributes.get(ATTR_CRON_DIALECT, CronDialect.UNIX.value)
    if dialect not in CRON_DIALECTS:
        raise ContractError(f"attribute {ATTR_CRON_DIALECT!r}: unknown dialect {dialect!r}")
    try:
        validate_cron(cron, CronDialect(dialect))
    except CronError as exc:
        raise ContractError(f"attribute 'cron': {exc}") from exc
    if not is_valid_timezone(timezone):
        raise ContractError(f"attribute 'timezone': unknown time zone {timezone!r}")
    return cron, timezone, CronDialect(dialect)


def decode_message(
    data: bytes, attributes: Mapping[str, str], *, signing_key: str | None = None
) -> Fire:
    """Decode and verify a received message. With a `signing_key`, an unsigned message or one
    whose signature does not match is rejected: it did not come from this deployment."""
    _verify(data, attributes, signing_key)
    trigger, fire_time = _trigger(attributes)
    payload = _data_fields(data)
    cron, timezone, dialect = _cron(attributes)
    fire = Fire(
        schedule_id=_required(attributes, ATTR_SCHEDULE_ID),
        fingerprint=_required(attributes, ATTR_FINGERPRINT),
        cron=cron,
        timezone=timezone,
        trigger=trigger,
        at=_instant(attributes, ATTR_AT),
        fire_time=fire_time,
        cron_dialect=dialect,
        **payload,
    )
    if trigger == "scheduled" and fire_time is not None and not _is_own_slot(fire, fire_time):
        raise ContractError(f"attribute {ATTR_FIRE_TIME!r}: {format_instant(fire_time)} is not "
                            "a slot of the schedule")
    _check_reserved(fire.schedule_id, fire.action.type)
    return fire


def _check_reserved(schedule_id: str, action_type: str) -> None:
    """Refuse a fire that pairs the tick's reserved IDs (`scheduler.reserved`) with another
    action, or the `tick` action with any other schedule: even signed, it is no fire the
    scheduler publishes, and must neither run an action under the tick's name nor a tick."""
    if is_tick_schedule(schedule_id) and action_type != TICK_ACTION_TYPE:
        raise ContractError(f"attribute {ATTR_SCHEDULE_ID!r}: {schedule_id!r} is reserved for "
                            f"the tick, whose action type is {TICK_ACTION_TYPE!r}, not "
                            f"{action_type!r}")
    if action_type == TICK_ACTION_TYPE and not is_tick_schedule(schedule_id):
        raise ContractError(f"action type {TICK_ACTION_TYPE!r}: reserved for the tick, not for "
                            f"schedule {schedule_id!r}")


def _is_own_slot(fire: Fire, fire_time: datetime) -> bool:
    """Whether a tick's scheduled fire names one of its schedule's own slots."""
    return fire_time == fire.at if fire.at is not None else is_slot(fire, fire_time)

