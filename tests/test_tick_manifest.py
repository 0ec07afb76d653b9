"""Tick mode's sync manifest (`scheduler.tick_manifest`) on the Firestore emulator: it follows
every document write of a sync in the same commit, a no-op sync reads it instead of every
document, and drift behind its back is repaired by `verify`, by a sync whose bucket disagrees,
and when the manifest is missing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from emulated_control import FailingClient, count_document_writes, emulated_settings

from scheduler.control import with_registry
from scheduler.registry import document_id
from scheduler.tick_control import TickControl
from scheduler.tick_manifest import BATCH, BUCKETS, bucket_of, chunks
from scheduler.validation import parse_schedule

pytestmark = pytest.mark.emulator

T0 = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)
ACTION = {"type": "http", "url": "https://hub.example/run"}


def _schedule(sid: str, **fields: Any) -> Any:
    return parse_schedule({"id": sid, "cron": "0 3 * * *", "action": ACTION, **fields})


@pytest.fixture
def ticks(cloud_scheduler_emulator: Any, pubsub_emulator: str, firestore_emulator: str,
          project_id: str) -> Iterator[TickControl]:
    settings = emulated_settings(cloud_scheduler_emulator, pubsub_emulator, project_id,
                                 firestore_emulator_host=firestore_emulator, mode="ticks")
    control = with_registry(settings)
    assert isinstance(control, TickControl)
    control.clock = lambda: T0
    control.syncer.clock = control.clock
    with control:
        yield control


def _manifest(ticks: TickControl) -> dict[str, str]:
    """The manifest's entries, every bucket complete."""
    buckets = ticks.ticks.manifest.read()
    assert all(b.digests is not None for b in buckets.values())
    return {k: v for b in buckets.values() for k, v in (b.digests or {}).items()}


def _real(ticks: TickControl) -> dict[str, str]:
    return ticks.ticks.manifest.stream_all()


def _no_full_read(ticks: TickControl, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail a full read; record the buckets whose documents are read."""
    manifest = ticks.ticks.manifest
    read: list[str] = []
    real = manifest.real

    def spy(buckets: Iterable[str]) -> dict[str, str]:
        listed = list(buckets)
        read.extend(listed)
        return real(listed)

    def refuse() -> dict[str, str]:
        raise AssertionError("a full read of every document")

    monkeypatch.setattr(manifest, "stream_all", refuse)
    monkeypatch.setattr(manifest, "real", spy)
    return read


def test_chunks_group_by_bucket_within_a_commit() -> None:
    doc_ids = [document_id(f"s{i}") for i in range(3000)]
    groups = chunks(doc_ids)
    assert sorted(i for g in groups for i in g) == list(range(3000))
    for group in groups:
        assert len(group) + len({bucket_of(doc_ids[i]) for i in group}) <= BATCH
    # Sorted by bucket: a bucket is written by at most two commits.
    spans = [{bucket_of(doc_ids[i]) for i in g} for g in groups]
    assert all(sum(b in s for s in spans) <= 2 for b in BUCKETS)


def test_the_manifest_follows_creates_edits_deletes_and_prunes(
        ticks: TickControl, monkeypatch: pytest.MonkeyPatch) -> None:
    schedules = [_schedule(f"s{i}") for i in range(30)] + [_schedule("p", paused=True)]
    assert ticks.reconcile(schedules).ok
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 31
    edited = [_schedule("s0", cron="0 4 * * *"), *schedules[2:], _schedule("new")]
    assert ticks.reconcile(edited, prune=False).ok  # s1 kept: not pruned
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 32
    assert ticks.remove("s2").ok and ticks.pause("s3").ok
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 31
    pruned = ticks.reconcile([s for s in edited if s.id not in ("s2", "s3")])
    assert pruned.ok and {o.step.schedule_id for o in pruned.outcomes} == {"s1", "s3"}
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 29
    # In line: a no-op sync reads the manifest, no document.
    read = _no_full_read(ticks, monkeypatch)
    writes = count_document_writes(ticks.ticks.registry)
    final = [s for s in edited if s.id not in ("s2", "s3")]
    assert ticks.reconcile(final).plan.is_noop and read == [] and writes[0] == 0


def test_a_hand_deleted_or_edited_document_is_repaired_by_verify(ticks: TickControl) -> None:
    schedules = [_schedule(f"s{i}") for i in range(10)]
    assert ticks.reconcile(schedules).ok
    collection = ticks.ticks.registry.collection
    collection.document(document_id("s1")).delete()
    collection.document(document_id("s2")).update({"definition": "{}", "sync_digest": "x"})
    # What a normal sync trusts: the manifest says both are in line.
    assert ticks.reconcile(schedules).plan.is_noop
    repaired = ticks.reconcile(schedules, verify=True)
    assert repaired.ok
    assert {(o.step.schedule_id, o.step.kind) for o in repaired.outcomes} == {
        ("s1", "create"), ("s2", "update")}
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 10
    assert ticks.reconcile(schedules).plan.is_noop


def test_a_sync_reads_the_documents_of_a_bucket_that_disagrees(
        ticks: TickControl, monkeypatch: pytest.MonkeyPatch) -> None:
    schedules = [_schedule(f"s{i}") for i in range(10)]
    assert ticks.reconcile(schedules).ok
    ticks.ticks.registry.collection.document(document_id("s1")).delete()  # by hand
    read = _no_full_read(ticks, monkeypatch)
    edited = [_schedule("s1", cron="0 5 * * *"), *schedules[2:]]  # s0 pruned
    result = ticks.reconcile(edited)
    # Only the two buckets that changed were read; s1's document was found gone: created.
    assert sorted(read) == sorted({bucket_of(document_id("s0")), bucket_of(document_id("s1"))})
    assert result.ok and {(o.step.schedule_id, o.step.kind) for o in result.outcomes} == {
        ("s0", "delete"), ("s1", "create")}
    monkeypatch.undo()
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 9


def test_a_missing_manifest_falls_back_to_reading_every_document(
        ticks: TickControl) -> None:
    schedules = [_schedule(f"s{i}") for i in range(10)]
    assert ticks.reconcile(schedules).ok
    ticks.ticks.manifest.drop()
    ticks.ticks.registry.collection.document(document_id("s4")).delete()  # by hand
    result = ticks.reconcile(schedules)
    assert result.ok and [(o.step.schedule_id, o.step.kind) for o in result.outcomes] == [
        ("s4", "create")]
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 10


def test_a_partial_bucket_is_not_trusted(ticks: TickControl) -> None:
    # An upsert before any sync writes a merged bucket entry, not a complete bucket.
    stray = _schedule("stray")
    assert ticks.upsert(stray).ok
    assert ticks.ticks.manifest.read()[bucket_of(document_id("stray"))].digests is None
    result = ticks.reconcile([_schedule("s0")])
    assert result.ok and ("stray", "delete") in {
        (o.step.schedule_id, o.step.kind) for o in result.outcomes}
    assert _manifest(ticks) == _real(ticks) and set(_real(ticks)) == {document_id("s0")}


def test_a_failed_commit_leaves_documents_and_manifest_consistent(ticks: TickControl) -> None:
    schedules = [_schedule(f"s{i}") for i in range(10)]
    assert ticks.reconcile(schedules).ok
    before = _real(ticks)
    registry = ticks.ticks.registry
    working = registry.client
    registry.client = FailingClient(working)
    try:
        failed = ticks.reconcile([_schedule("s0", cron="0 4 * * *"), *schedules[2:]])
    finally:
        registry.client = working
    assert not failed.ok
    assert _real(ticks) == before and _manifest(ticks) == before
    retried = ticks.reconcile([_schedule("s0", cron="0 4 * * *"), *schedules[2:]])
    assert retried.ok and _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 9


def test_a_repair_that_lost_a_race_with_a_commit_writes_nothing(ticks: TickControl) -> None:
    assert ticks.reconcile([_schedule("s0")]).ok
    manifest = ticks.ticks.manifest
    read = manifest.read()
    bucket = bucket_of(document_id("s0"))
    assert ticks.upsert(_schedule("s0", cron="0 4 * * *")).ok  # commits to the bucket meanwhile
    # Documents read before that commit (here: none) must not overwrite the entry it wrote.
    assert manifest.repair(read, {}, [bucket]) == 0
    assert _manifest(ticks) == _real(ticks) and len(_real(ticks)) == 1
