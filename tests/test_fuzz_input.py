"""Poison and hostile input: random, truncated, mutated, huge, badly signed and replayed
messages fed to the decoder and to the pipeline. Each is rejected with a reason (dead-lettered
with a dead-letter policy, acked without one) or, replayed, answered as a duplicate; nothing
raises out of the pipeline, and memory stays bounded over many messages."""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory_ledger import MemoryLedger

from scheduler.contract import (
    ATTR_SIGNATURE,
    ContractError,
    Message,
    build_message,
    decode_message,
)
from scheduler.model import Action, Schedule
from worker.action import ActionContext, ActionRegistry, ActionResult
from worker.pipeline import Pipeline
from worker.transport import Delivery, Disposition, Outcome

KEY = "fuzz-signing-key"
SLOT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = SLOT + timedelta(seconds=2)
class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, context: ActionContext) -> ActionResult | None:
        self.calls += 1
        return None


def valid_message(schedule_id: str = "team/report", fire_time: datetime | None = None) -> Message:
    schedule = Schedule(id=schedule_id, action=Action("custom", {"to": "ops"}), cron="*/5 * * * *")
    if fire_time is None:
        return build_message(schedule, signing_key=KEY)
    return build_message(schedule, signing_key=KEY, trigger="manual", fire_time=fire_time)


def pipeline(action: Counting | None = None) -> Pipeline:
    return Pipeline(MemoryLedger(), ActionRegistry({"custom": action or Counting()}),
                    worker_id="fuzz", signing_key=KEY, clock=lambda: NOW)


def deliver(data: bytes, attributes: Any, attempt: int | None = None) -> Delivery:
    return Delivery("m1", data, attributes, SLOT + timedelta(seconds=1), attempt)


def assert_rejected(disposition: Disposition, attempt: int | None) -> None:
    assert disposition.outcome == Outcome.REJECTED, disposition
    # Toward the dead-letter topic when Pub/Sub counts attempts, else acked so it cannot loop.
    assert disposition.ack is (attempt is None)


# Strategies.

attribute_values = st.one_of(st.text(max_size=40), st.sampled_from(
    ["1", "scheduled", "manual", "*/5 * * * *", "UTC", "2026-03-02T10:00:00Z", "v1=00"]))
attributes = st.dictionaries(
    st.one_of(st.text(max_size=20), st.sampled_from(
        ["scion-format", "schedule-id", "fingerprint", "cron", "timezone", "trigger", "fire-time",
         "at", "signature"])),
    attribute_values, max_size=10)
wrong_typed = st.dictionaries(st.text(max_size=10), st.one_of(
    st.integers(), st.none(), st.binary(max_size=10), st.lists(st.integers(), max_size=3),
    st.floats(allow_nan=True)), min_size=1, max_size=5)
attempts = st.one_of(st.none(), st.integers(min_value=1, max_value=10))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A valid signed message, then truncated, extended, re-keyed or with one attribute
    changed or dropped (each breaks the signature or the format)."""
    message = valid_message()
    data, attrs = message.data, dict(message.attributes)
    kind = draw(st.sampled_from(["truncate", "append", "drop", "change", "resign_bad"]))
    if kind == "truncate":
        data = data[:draw(st.integers(min_value=0, max_value=len(data) - 1))]
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=50))
    elif kind == "drop":
        attrs.pop(draw(st.sampled_from(sorted(attrs))))
    elif kind == "change":
        name = draw(st.sampled_from(sorted(attrs)))
        attrs[name] = draw(attribute_values.filter(lambda v, old=attrs[name]: v != old))
    else:
        attrs[ATTR_SIGNATURE] = "v1=" + draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    return data, attrs


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=st.binary(max_size=2000), attrs=attributes)
def test_the_decoder_raises_only_contract_errors(data: bytes, attrs: dict[str, str]) -> None:
    for key in (KEY, None):
        with contextlib.suppress(ContractError):
            decode_message(data, attrs, signing_key=key)


@FUZZ
@given(case=mutated(), attempt=attempts)
def test_tampered_messages_are_rejected_never_run(case: tuple[bytes, dict[str, str]],
                                                  attempt: int | None) -> None:
    action = Counting()
    disposition = pipeline(action).handle(deliver(*case, attempt))
    assert_rejected(disposition, attempt)
    assert action.calls == 0


@FUZZ
@given(data=st.binary(max_size=2000), attrs=st.one_of(attributes, wrong_typed), attempt=attempts)
def test_random_messages_and_wrong_attribute_types_never_crash_the_pipeline(
        data: bytes, attrs: dict[str, Any], attempt: int | None) -> None:
    action = Counting()
    disposition = pipeline(action).handle(deliver(data, attrs, attempt))
    assert isinstance(disposition.outcome, Outcome)
    assert_rejected(disposition, attempt)
    assert action.calls == 0


def test_a_huge_payload_is_rejected() -> None:
    message = valid_message()
    for data in (message.data + b" " * 5_000_000, b"{" * 5_000_000, b"\xff" * 5_000_000):
        assert_rejected(pipeline().handle(deliver(data, dict(message.attributes), 1)), 1)
    nested = b'{"action": ' * 100_000  # deep nesting must not blow the stack
    assert_rejected(pipeline().handle(deliver(nested, dict(message.attributes))), None)


def test_a_replayed_signed_message_is_a_duplicate_scheduled_or_manual() -> None:
    action = Counting()
    worker = pipeline(action)
    for message in (valid_message(), valid_message(fire_time=SLOT + timedelta(seconds=1.5))):
        first = worker.handle(deliver(message.data, dict(message.attributes)))
        replays = [worker.handle(deliver(message.data, dict(message.attributes)))
                   for _ in range(3)]
        assert first.outcome == Outcome.SUCCEEDED
        assert {r.outcome for r in replays} == {"duplicate"} and all(r.ack for r in replays)
    assert action.calls == 2


def test_memory_stays_bounded_over_many_hostile_messages() -> None:
    """Rejected and replayed messages leave nothing behind: the traced memory after 2,000 more
    of them grows by well under what they weigh (each 1/4 are 200 KB)."""
    worker = pipeline()
    valid = valid_message()
    worker.handle(deliver(valid.data, dict(valid.attributes)))

    def batch(count: int) -> None:
        for i in range(count):
            kind = i % 4
            if kind == 0:
                worker.handle(deliver(valid.data, dict(valid.attributes)))  # replay
            elif kind == 1:
                worker.handle(deliver(b"x" * 200_000, dict(valid.attributes), 2))
            elif kind == 2:
                worker.handle(deliver(valid.data[:i % len(valid.data)], dict(valid.attributes)))
            else:
                worker.handle(deliver(b"{}", {"scion-format": "1", f"junk{i}": "v" * 100}))

    tracemalloc.start()
    try:
        batch(500)  # warm-up: caches, interned strings, the logger
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        batch(2000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, f"memory grew by {grown} bytes over 2,000 messages"
