"""The fire contract: what a job publishes, what a worker accepts, and the execution ID."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from schedule_strategies import KNOWN_TYPES, schedule_documents

from scheduler.config import Settings
from scheduler.contract import (
    ATTR_AT,
    ATTR_CRON,
    ATTR_FINGERPRINT,
    ATTR_FIRE_TIME,
    ATTR_FORMAT,
    ATTR_SCHEDULE_ID,
    ATTR_SIGNATURE,
    ATTR_TIMEZONE,
    ATTR_TRIGGER,
    FORMAT_VERSION,
    ContractError,
    Fire,
    Message,
    build_message,
    decode_message,
    execution_id,
    message_size,
    sign,
)
from scheduler.model import Action, Schedule
from scheduler.reserved import TICK_ACTION_TYPE, TICK_SCHEDULE_ID
from scheduler.ticks import TICK_SCHEDULE, Shard, tick_message
from scheduler.validation import parse_schedule

PROPERTY = settings(max_examples=200, deadline=None)
KEY = "test-signing-key"


def schedule(**overrides: Any) -> Schedule:
    raw: dict[str, Any] = {
        "id": "daily-report",
        "cron": "*/15 * * * *",
        "timezone": "Europe/Berlin",
        "action": {"type": "http", "url": "https://hub.example.com/api/fire", "body": {"x": 1}},
        "overlap": "allow",
        "catchup": "latest",
        "catchup_window": "1h",
        "max_attempts": 3,
        "labels": {"team": "hub"},
    }
    raw.update(overrides)
    return parse_schedule({k: v for k, v in raw.items() if v is not ...})


def decode(message: Message, key: str | None = None) -> Fire:
    return decode_message(message.data, message.attributes, signing_key=key)


# --- what is published ----------------------------------------------------------------------------

def test_attributes_carry_id_version_fingerprint_cron_and_timezone() -> None:
    s = schedule()
    message = build_message(s)
    assert dict(message.attributes) == {
        ATTR_FORMAT: FORMAT_VERSION,
        ATTR_SCHEDULE_ID: "daily-report",
        ATTR_FINGERPRINT: s.fingerprint(),
        ATTR_CRON: "*/15 * * * *",
        ATTR_TIMEZONE: "Europe/Berlin",
        ATTR_TRIGGER: "scheduled",
    }
    assert all(isinstance(v, str) for v in message.attributes.values())


def test_data_carries_the_action_json_and_the_policies() -> None:
    payload = json.loads(build_message(schedule()).data)
    assert payload == {
        "action": {"type": "http", "url": "https://hub.example.com/api/fire", "method": "POST",
                   "headers": {}, "body": {"x": 1}, "timeout": 30.0},
        "overlap": "allow", "catchup": "latest", "catchup_window": 3600.0, "max_attempts": 3,
        "labels": {"team": "hub"},
    }


def test_a_one_shot_publishes_its_job_minute_in_utc_and_its_exact_at() -> None:
    s = schedule(cron=..., at="2026-03-29T02:30:20.5+02:00")
    attributes = build_message(s).attributes
    assert attributes[ATTR_CRON] == "29 0 29 3 *"
    assert attributes[ATTR_TIMEZONE] == "UTC"
    assert attributes[ATTR_AT] == "2026-03-29T00:30:20.500000Z"
    fire = decode(build_message(s))
    assert fire.one_shot and fire.at == datetime(2026, 3, 29, 0, 30, 20, 500000, tzinfo=UTC)
    # The job's publish at its minute stands for `at`, not for the minute.
    assert fire.derive_fire_time(datetime(2026, 3, 29, 0, 29, 0, 300000, tzinfo=UTC)) == fire.at
    assert fire.derive_fire_time(datetime(2026, 3, 29, 0, 28, 57, tzinfo=UTC)) == fire.at
    # A year later the job's cron comes round again: that slot is only a slot.
    next_year = datetime(2027, 3, 29, 0, 29, tzinfo=UTC)
    assert fire.derive_fire_time(next_year) == next_year


def test_a_job_written_before_the_lead_still_fires_its_one_shot_at_at() -> None:
    # Such a job fires at `at`'s own minute (the rounded `at` its message carries).
    s = schedule(cron=..., at="2026-03-29T00:31:00Z")
    message = build_message(s)
    old = Message(message.data, {**message.attributes, ATTR_CRON: "31 0 29 3 *"})
    fire = decode(old)
    assert fire.derive_fire_time(datetime(2026, 3, 29, 0, 31, 0, 200000, tzinfo=UTC)) == fire.at


def test_message_size_counts_data_and_attributes_in_bytes() -> None:
    s = schedule(id="é" * 10)
    message = build_message(s, signing_key=KEY)
    expected = len(message.data) + sum(
        len(k.encode()) + len(v.encode()) for k, v in message.attributes.items()
    )
    assert message.size == expected
    assert message_size(s) == expected  # signature included, whatever the key


# --- round trip -----------------------------------------------------------------------------------

@PROPERTY
@given(schedule_documents())
def test_decode_of_build_reproduces_the_action_and_policies(raw: dict[str, Any]) -> None:
    s = parse_schedule(raw, known_action_types=KNOWN_TYPES)
    for key in (None, KEY):
        fire = decode(build_message(s, signing_key=key), key)
        assert fire.schedule_id == s.id
        assert fire.fingerprint == s.fingerprint()
        assert (fire.cron, fire.timezone) == (s.effective_cron, s.effective_timezone)
        assert fire.action == s.action
        assert (fire.overlap, fire.catchup, fire.max_attempts) == (
            s.overlap,
            s.catchup,
            s.max_attempts,
        )
        assert fire.catchup_window == s.catchup_window
        assert fire.labels == s.labels
        assert fire.at == s.at
        assert (fire.trigger, fire.fire_time) == ("scheduled", None)


@PROPERTY
@given(schedule_documents())
def test_attributes_fit_pub_sub_limits(raw: dict[str, Any]) -> None:
    # Pub/Sub: at most 100 attributes, keys up to 256 bytes, values up to 1024 bytes
    # (https://cloud.google.com/pubsub/quotas#resource_limits). The longest schedule ID, 256
    # characters of four UTF-8 bytes each, is exactly 1024 bytes.
    s = parse_schedule(raw, known_action_types=KNOWN_TYPES)
    attributes = build_message(s, signing_key=KEY).attributes
    assert len(attributes) <= 100
    assert all(len(k.encode()) <= 256 and len(v.encode()) <= 1024 for k, v in attributes.items())


def test_the_longest_id_fits_an_attribute_value() -> None:
    s = schedule(id="\U0001F600" * 256)
    assert len(build_message(s).attributes[ATTR_SCHEDULE_ID].encode()) == 1024


# --- signatures -----------------------------------------------------------------------------------

def test_signed_message_verifies_with_the_key_from_the_environment() -> None:
    key = Settings.from_env({"SCION_SCHEDULER_SIGNING_KEY": KEY}).signing_key
    assert key == KEY
    message = build_message(schedule(), signing_key=key)
    assert message.attributes[ATTR_SIGNATURE].startswith("v1=")
    assert decode(message, key).schedule_id == "daily-report"
    # A worker without a key still reads a signed message.
    assert decode(message).schedule_id == "daily-report"


def _tampered(change: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]) -> Message:
    message = build_message(schedule(), signing_key=KEY)
    data, attributes = change(message.data, dict(message.attributes))
    return Message(data, attributes)


def _set(name: str, value: str) -> Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]:
    def change(data: bytes, attributes: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        attributes[name] = value
        return data, attributes
    return change


FORGERIES: dict[str, Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]]] = {
    "data": lambda d, a: (d.replace(b"hub.example.com", b"evil.example.com"), a),
    "data-appended": lambda d, a: (d + b" ", a),
    "schedule-id": _set(ATTR_SCHEDULE_ID, "other"),
    "fingerprint": _set(ATTR_FINGERPRINT, "0" * 32),
    "cron": _set(ATTR_CRON, "* * * * *"),
    "timezone": _set(ATTR_TIMEZONE, "UTC"),
    "added-at": _set(ATTR_AT, "2026-01-01T00:00:00Z"),
    "manual": lambda d, a: (
        d,
        {**a, ATTR_TRIGGER: "manual", ATTR_FIRE_TIME: "2026-01-01T00:00:00Z"},
    ),
    "signature-garbled": _set(ATTR_SIGNATURE, "v1=" + "0" * 64),
    "signature-other-scheme": _set(ATTR_SIGNATURE, "v2=abc"),
    "signature-non-ascii": _set(ATTR_SIGNATURE, "v1=é"),
    "signature-removed": lambda d, a: (d, {k: v for k, v in a.items() if k != ATTR_SIGNATURE}),
    "signature-empty": _set(ATTR_SIGNATURE, ""),
}


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
def test_forged_messages_are_rejected(forgery: str) -> None:
    message = _tampered(FORGERIES[forgery])
    with pytest.raises(ContractError, match=r"signature|unsigned"):
        decode(message, KEY)


# Signed with the deployment's key, yet no fire the scheduler publishes: the tick's reserved IDs
# with another action, or the tick's action under another ID.
RESERVED_MISUSES: dict[str, tuple[Callable[[], Schedule], str]] = {
    "tick-id-with-http": (lambda: replace(schedule(), id=TICK_SCHEDULE_ID),
                          r"attribute 'schedule-id': .*reserved for the tick.* not 'http'"),
    "shard-id-with-http": (
        lambda: replace(schedule(), id=Shard(datetime(2026, 1, 1, tzinfo=UTC), ("a",)).schedule_id),
        r"attribute 'schedule-id': .*shard.* reserved for the tick.* not 'http'"),
    "tick-action-elsewhere": (lambda: replace(TICK_SCHEDULE, id="daily-report"),
                              r"action type 'tick': reserved for the tick, not for schedule "
                              r"'daily-report'"),
    "shard-action-elsewhere": (
        lambda: replace(TICK_SCHEDULE, id="daily-report",
                        action=Action(TICK_ACTION_TYPE, {"documents": ["a"]})),
        r"action type 'tick'"),
}


@pytest.mark.parametrize("misuse", list(RESERVED_MISUSES), ids=list(RESERVED_MISUSES))
def test_a_signed_message_misusing_the_ticks_reserved_names_is_refused(misuse: str) -> None:
    forged, reason = RESERVED_MISUSES[misuse]
    with pytest.raises(ContractError, match=reason):
        decode(build_message(forged(), signing_key=KEY), KEY)


def test_the_tick_and_its_shards_still_decode() -> None:
    shard = Shard(datetime(2026, 1, 1, tzinfo=UTC), ("a",))
    for message in (tick_message(KEY), shard.message(KEY)):
        assert decode(message, KEY).action.type == TICK_ACTION_TYPE


def test_wrong_key_is_rejected() -> None:
    message = build_message(schedule(), signing_key="someone-else")
    with pytest.raises(ContractError, match="signature"):
        decode(message, KEY)


def test_unsigned_message_is_rejected_when_a_key_is_configured() -> None:
    with pytest.raises(ContractError, match="unsigned"):
        decode(build_message(schedule()), KEY)


def test_signature_covers_values_unambiguously() -> None:
    # Moving text between attributes must change what is signed: otherwise a signed message could
    # be rearranged into a different one under the same signature.
    signed = {ATTR_FORMAT: "1", ATTR_CRON: "0 0 * * *", ATTR_FINGERPRINT: "abc"}
    merged = {ATTR_FORMAT: "1", ATTR_CRON: "0 0 * * *\nfingerprint=abc"}
    assert sign(b"{}", signed, KEY) != sign(b"{}", merged, KEY)
    assert sign(b"\n{}", {ATTR_CRON: "x"}, KEY) != sign(b"{}", {ATTR_CRON: "x\n"}, KEY)
    message = build_message(schedule(), signing_key=KEY)
    attributes = dict(message.attributes)
    fingerprint = attributes.pop(ATTR_FINGERPRINT)
    attributes[ATTR_CRON] += f"\n{ATTR_FINGERPRINT}={fingerprint}"
    with pytest.raises(ContractError, match="signature"):
        decode_message(message.data, attributes, signing_key=KEY)


def test_attributes_added_by_the_publisher_client_do_not_break_the_signature() -> None:
    message = build_message(schedule(), signing_key=KEY)
    attributes = {**message.attributes, "googclient_OpenTelemetrySpanContext": "abc"}
    assert decode_message(message.data, attributes, signing_key=KEY).schedule_id == "daily-report"


# --- manual runs and execution IDs ----------------------------------------------------------------

def test_manual_run_carries_trigger_and_exact_fire_time() -> None:
    at = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    message = build_message(schedule(), trigger="manual", fire_time=at, signing_key=KEY)
    assert message.attributes[ATTR_TRIGGER] == "manual"
    assert message.attributes[ATTR_FIRE_TIME] == "2026-06-01T12:00:00.123456Z"
    fire = decode(message, KEY)
    assert (fire.trigger, fire.fire_time) == ("manual", at)
    # The exact time wins over any publish time.
    assert fire.derive_fire_time(at + timedelta(minutes=7)) == at


def test_manual_and_scheduled_fires_at_the_same_instant_get_different_execution_ids() -> None:
    slot = datetime(2026, 6, 1, 12, 15, tzinfo=UTC)
    assert execution_id("daily-report", slot) != execution_id("daily-report", slot, "manual")


def test_build_refuses_inconsistent_manual_arguments() -> None:
    with pytest.raises(ValueError):
        build_message(schedule(), trigger="manual")
    with pytest.raises(ValueError):
        build_message(schedule(), trigger="expired", fire_time=datetime(2026, 1, 1, tzinfo=UTC))


def test_execution_id_is_stable() -> None:
    slot = datetime(2026, 6, 1, 12, 15, tzinfo=UTC)
    first = execution_id("daily-report", slot)
    assert first == execution_id("daily-report", slot)
    # The same instant written in another zone is the same fire.
    assert first == execution_id("daily-report", slot.astimezone(ZoneInfo("Europe/Berlin")))
    assert first != execution_id("daily-report", slot + timedelta(minutes=15))
    assert first != execution_id("daily-report-2", slot)


def test_every_delivery_of_a_scheduled_fire_maps_to_one_execution() -> None:
    s = schedule()
    fire = decode(build_message(s))
    slot = datetime(2026, 6, 1, 12, 15, tzinfo=UTC)
    deliveries = [slot - timedelta(milliseconds=4), slot, slot + timedelta(seconds=2),
                  slot + timedelta(minutes=9)]
    ids = {execution_id(fire.schedule_id, fire.derive_fire_time(t)) for t in deliveries}
    assert ids == {execution_id(s.id, slot)}


# --- malformed messages ---------------------------------------------------------------------------

def _break(
    change: Callable[[dict[str, Any], dict[str, str]], None],
) -> tuple[bytes, dict[str, str]]:
    message = build_message(schedule())
    payload = json.loads(message.data)
    attributes = dict(message.attributes)
    change(payload, attributes)
    return json.dumps(payload).encode(), attributes


def _drop(name: str) -> Callable[[dict[str, Any], dict[str, str]], None]:
    def change(payload: dict[str, Any], attributes: dict[str, str]) -> None:
        del attributes[name]
    return change


def _drop_field(name: str) -> Callable[[dict[str, Any], dict[str, str]], None]:
    def change(payload: dict[str, Any], attributes: dict[str, str]) -> None:
        del payload[name]
    return change


def _attr(name: str, value: str) -> Callable[[dict[str, Any], dict[str, str]], None]:
    return lambda p, a: a.update({name: value})


def _field(name: str, value: Any) -> Callable[[dict[str, Any], dict[str, str]], None]:
    return lambda p, a: p.update({name: value})


MALFORMED: dict[str, tuple[Callable[[dict[str, Any], dict[str, str]], None], str]] = {
    "no-version": (_drop(ATTR_FORMAT), "format version"),
    "unknown-version": (_attr(ATTR_FORMAT, "2"), "format version"),
    "no-schedule-id": (_drop(ATTR_SCHEDULE_ID), "schedule-id"),
    "empty-schedule-id": (_attr(ATTR_SCHEDULE_ID, ""), "schedule-id"),
    "no-fingerprint": (_drop(ATTR_FINGERPRINT), "fingerprint"),
    "no-cron": (_drop(ATTR_CRON), "cron"),
    "no-timezone": (_drop(ATTR_TIMEZONE), "timezone"),
    "no-trigger": (_drop(ATTR_TRIGGER), "trigger"),
    "bad-cron": (_attr(ATTR_CRON, "0 0 * * * *"), "cron"),
    "impossible-cron": (_attr(ATTR_CRON, "0 0 30 2 *"), "cron"),
    "bad-timezone": (_attr(ATTR_TIMEZONE, "Mars/Base"), "timezone"),
    "bad-trigger": (_attr(ATTR_TRIGGER, "cosmic-ray"), "trigger"),
    "manual-without-time": (_attr(ATTR_TRIGGER, "manual"), "fire-time"),
    "scheduled-with-time-not-a-slot": (_attr(ATTR_FIRE_TIME, "2026-01-01T00:00:07Z"),
                                       "not a slot"),
    "expired-with-time": (
        lambda p, a: a.update({ATTR_TRIGGER: "expired", ATTR_FIRE_TIME: "2026-01-01T00:00:00Z"}),
        "fire-time",
    ),
    "bad-fire-time": (
        lambda p, a: a.update({ATTR_TRIGGER: "manual", ATTR_FIRE_TIME: "noon"}),
        "fire-time",
    ),
    "bad-at": (_attr(ATTR_AT, "2026-01-01"), "at"),
    "no-action": (_drop_field("action"), "action"),
    "action-not-object": (_field("action", "http"), "action"),
    "action-without-type": (_field("action", {"url": "x"}), "type"),
    "bad-overlap": (_field("overlap", "queue"), "overlap"),
    "bad-catchup": (_field("catchup", "some"), "catchup"),
    "bad-max-attempts": (_field("max_attempts", 0), "max_attempts"),
    "bool-max-attempts": (_field("max_attempts", True), "max_attempts"),
    "bad-window": (_field("catchup_window", "15m"), "catchup_window"),
    "negative-window": (_field("catchup_window", -1), "catchup_window"),
    "huge-window": (_field("catchup_window", 1e300), "catchup_window"),
    "window-past-timedelta": (_field("catchup_window", 10**14), "catchup_window"),
    "bad-labels": (_field("labels", ["a"]), "labels"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_messages_raise_contract_error_with_a_reason(case: str) -> None:
    change, fragment = MALFORMED[case]
    data, attributes = _break(change)
    with pytest.raises(ContractError, match=fragment):
        decode_message(data, attributes)


@pytest.mark.parametrize(("data", "fragment"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "object"),
    (b'{"action": {"type": "http"}, "catchup_window": NaN}', "catchup_window"),
    (b'{"action": {"type": "http"}, "catchup_window": Infinity}', "catchup_window"),
])
def test_bad_data_raises_contract_error(data: bytes, fragment: str) -> None:
    attributes = dict(build_message(schedule()).attributes)
    with pytest.raises(ContractError, match=fragment):
        decode_message(data, attributes)
