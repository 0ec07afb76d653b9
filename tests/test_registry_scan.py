"""The audit's read of the registry (`worker.registry_scan`) on the Firestore emulator: the same
entries as `scheduler.registry` reads, page after page, only the deployment's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs
from tick_documents import put_documents, tick_document

from scheduler.registry import ScheduleRegistry, document_id
from scheduler.validation import parse_schedule
from worker.registry_scan import RegistryScan

pytestmark = pytest.mark.emulator

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
OWN, OTHER = "scion-", "other-"


def _schedule(sid: str, **fields: Any) -> Any:
    raw = {"id": sid, "cron": "*/5 * * * *", "action": {"type": "http", "url": "http://x/"}}
    raw.update(fields)
    return parse_schedule(raw)


def test_it_reads_every_own_entry_across_pages_as_the_registry_does(firestore_client: Any) -> None:
    own = [_schedule(f"own-{i:02d}") for i in range(23)]
    own += [_schedule("paused", paused=True),
            _schedule("once", cron=None, at="2026-03-02T10:07:30Z")]
    other = [_schedule(f"theirs-{i}") for i in range(4)]
    put_documents(firestore_client, [(s, tick_document(s, T0, T0 + timedelta(minutes=5)))
                                     for s in own])
    put_documents(firestore_client, [(s, tick_document(s, T0, T0, owner=OTHER)) for s in other])
    # Written before owners were recorded: every deployment's, as `scheduler.registry` reads it.
    legacy = _schedule("legacy")
    fields = tick_document(legacy, T0, None)
    del fields["owner"]
    put_documents(firestore_client, [(legacy, fields)])

    scanned = list(RegistryScan(firestore_client, "scion_", OWN, page=5).iter_entries())

    expected = ScheduleRegistry(firestore_client, "scion_", owner=OWN).load()
    assert {e.owed.schedule.id: e for e in scanned} == expected
    assert len(scanned) == len(own) + 1
    assert not {s.id for s in other} & {e.owed.schedule.id for e in scanned}


def test_an_unreadable_document_is_logged_and_the_rest_are_read(firestore_client: Any) -> None:
    good = [_schedule("a"), _schedule("c")]
    put_documents(firestore_client, [(s, tick_document(s, T0, T0)) for s in good])
    bad = _schedule("b")
    fields = tick_document(bad, T0, T0)
    fields["definition"] = "{not json"
    put_documents(firestore_client, [(bad, fields)])

    with capture_logs() as logs:
        scanned = list(RegistryScan(firestore_client, "scion_", OWN, page=2).iter_entries())

    assert sorted(e.owed.schedule.id for e in scanned) == ["a", "c"]
    unreadable = [entry for entry in logs if entry["event"].startswith("registry document")]
    assert [entry["document"] for entry in unreadable] == [document_id("b")]
    assert "'b'" in unreadable[0]["error"]
