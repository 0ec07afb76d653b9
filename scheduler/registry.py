"""The schedule registry: what each owned schedule owes, kept in Firestore for the audit.

The worker's audit (`worker.audit`) must know every schedule's definition each minute without
spending Cloud Scheduler's read quota, so the control module writes one document per owned
schedule in `{collection_prefix}schedules` whenever it changes a job (sync, upsert, remove,
pause, resume). Document ID: sha256 hex of the schedule ID (any printable ID is valid, a
document ID is not); fields:

* `schedule_id`, `definition` (the schedule file form, JSON), `fingerprint`;
* `owed_since`: when this definition took effect (created, edited or resumed): earlier slots
  belonged to an older definition, or to nobody, and are never owed;
* `paused_since`: from when no slot is owed (paused, or a job write in flight); absent: none;
* `updated_at`.

* `next_fire_time`: when the earliest slot of the current definition that no tick has published
  yet is due to be published (`first_slot`): a cron slot itself, a one-shot's job's minute
  (`scheduler.model.one_shot_slot`, 30 to 90 s before its `at`; versions before wrote the `at`
  itself); set when a definition takes effect, null while paused or held and when no slot is
  left; only tick mode's claimer advances it (issue 17, docs/architecture.md);
* `sync_digest`: a digest of `definition` and whether `paused_since` is set (`sync_digest`);
* `owner`: the deployment's job prefix. A registry built with an `owner` reads and writes only
  its own documents (and those written before the field existed, which its next write adopts).

Both modes write both fields, so the worker's tick can read the documents a sync wrote in
either mode (a migration rewrites `next_fire_time` from the cut-over: `scheduler.migrate`).

Order of writes, so that the audit never owes a slot the job did not fire: before a job is
written, its document is held (`paused_since = now`); after the write succeeded it is settled
(`owed_since = now`, not paused, unless the schedule is paused). A slot between the two is owed
by neither definition. A removed schedule's document is deleted before its job. A failed job
write leaves the document held until the next sync settles it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.cron import CronDialect, next_fires
from scheduler.due import Owed
from scheduler.egress import EgressPolicy
from scheduler.logs import get_logger
from scheduler.model import Schedule, one_shot_slot
from scheduler.validation import PUBLIC_ONLY, parse_schedule, registered_action_types

log = get_logger(__name__)

# Firestore's limit of writes per commit.
_BATCH = 500


def document_id(schedule_id: str) -> str:
    """The registry document's ID of a schedule."""
    return hashlib.sha256(schedule_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One registry document as read."""

    owed: Owed
    fingerprint: str
    owner: str | None = None
    next_fire_time: datetime | None = None

    @property
    def schedule_id(self) -> str:
        """The schedule's ID."""
        return self.owed.schedule.id


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    moment: datetime = value.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                    moment.second, moment.microsecond, tzinfo=UTC)


def entry_from_document(data: dict[str, Any], action_types: frozenset[str] | None = None,
                        egress: EgressPolicy = PUBLIC_ONLY) -> Entry:
    """An entry from a document's fields; ValueError (naming the schedule) when malformed.
    `action_types`: the registered action types, when the caller has read them already;
    `egress`: the deployment's allowed targets, which the definition was validated against."""
    try:
        schedule = parse_schedule(json.loads(data["definition"]), known_action_types=action_types,
                                  egress=egress)
        owed_since = _utc(data["owed_since"])
        assert owed_since is not None
        owner = data.get("owner")
        return Entry(Owed(schedule, owed_since, _utc(data.get("paused_since"))),
                     str(data["fingerprint"]), None if owner is None else str(owner),
                     _utc(data.get("next_fire_time")))
    except Exception as exc:
        raise ValueError(f"registry document of {data.get('schedule_id')!r}: {exc}") from exc


def first_slot(schedule: Schedule, owed_since: datetime,
               paused_since: datetime | None) -> datetime | None:
    """A document's `next_fire_time` when its definition takes effect at `owed_since`: the first
    slot at or after it (a one-shot: the minute its job would fire in, `one_shot_slot`, unless
    its `at` is earlier), None while the schedule is paused or held (`paused_since`: nothing
    owed from then on) or when no slot is left. So every document's next fire time is the
    minute whose tick publishes it, and the tick's due query reads no document early."""
    if schedule.paused or paused_since is not None:
        return None
    if schedule.at is not None:
        return one_shot_slot(schedule.at) if schedule.at >= owed_since else None
    return _first_fire(schedule.effective_cron, schedule.effective_timezone,
                       schedule.cron_dialect, owed_since)


@functools.lru_cache(maxsize=4096)
def _first_fire(cron: str, timezone: str, dialect: CronDialect,
                since: datetime) -> datetime | None:
    # A sync sets every document it writes from one `now`, and many schedules share a cron:
    # the walk is the costly part of a first sync of many schedules.
    spec = _Cron(cron, timezone, dialect)
    fires = next_fires(spec, since - timedelta(microseconds=1), 1)
    return fires[0] if fires else None


@dataclass(frozen=True)
class _Cron:
    effective_cron: str
    effective_timezone: str
    cron_dialect: CronDialect


def definition_of(schedule: Schedule) -> str:
    """A document's `definition`: the schedule file form, as JSON."""
    return json.dumps(schedule.to_dict(), sort_keys=True, ensure_ascii=False)


def sync_digest(definition: str, held: bool) -> str:
    """A document's `sync_digest`: its definition and whether it owes nothing from some moment
    on (paused, or paused on request), which is all a sync compares, so that a sync of many
    schedules reads this one short field of each (`scheduler.tick_sync`)."""
    marked = f"{'held' if held else 'active'}:{definition}"
    return hashlib.sha256(marked.encode("utf-8")).hexdigest()[:32]


def document_of(schedule: Schedule, owed_since: datetime, paused_since: datetime | None,
                now: datetime, owner: str | None = None) -> dict[str, Any]:
    """The fields of a schedule's registry document (`owner`: the deployment's job prefix)."""
    definition = definition_of(schedule)
    return {
        "schedule_id": schedule.id,
        "definition": definition,
        "sync_digest": sync_digest(definition, paused_since is not None),
        "fingerprint": schedule.fingerprint(),
        "owed_since": owed_since,
        "paused_since": paused_since,
        "updated_at": now,
        "next_fire_time": first_slot(schedule, owed_since, paused_since),
        "owner": owner,
    }


def settled(schedule: Schedule, previous: Entry | None, now: datetime,
            owner: str | None = None) -> Owed | None:
    """What the registry should hold for `schedule` after its job is in line with it, given the
    `previous` entry (None when it has none); None when `previous` needs no write. A document
    of no `owner` yet (written before the field existed) is adopted, keeping what it owes."""
    if previous is not None:
        same = previous.fingerprint == schedule.fingerprint()
        adopted = previous.owner == owner
        was = previous.owed
        if schedule.paused:
            if same and adopted and was.schedule.paused and was.paused_since is not None:
                return None
            return Owed(schedule, was.owed_since if same else now, was.paused_since or now)
        if same and not was.schedule.paused and was.paused_since is None:
            return None if adopted else was
    if schedule.paused:
        return Owed(schedule, now, now)
    return Owed(schedule, now)


class ScheduleRegistry:
    """The registry collection on Firestore."""

    def __init__(self, client: Any, collection_prefix: str = "scion_",
                 egress: EgressPolicy = PUBLIC_ONLY, owner: str | None = None) -> None:
        self.client = client
        self._egress = egress
        # None: every document (the worker's audit); else only this deployment's.
        self.owner = owner
        self.collection_prefix = collection_prefix
        self.collection = client.collection(f"{collection_prefix}schedules")

    def _owns(self, owner: Any) -> bool:
        return self.owner is None or owner is None or owner == self.owner

    def load(self) -> dict[str, Entry]:
        """Every entry by schedule ID: one query (a read per document)."""
        return {entry.schedule_id: entry for entry in self.iter_entries()}

    def iter_entries(self) -> Iterator[Entry]:
        """Every entry, one at a time as the query streams them: the worker's audit holds none
        of them after it has walked its slots (tick mode's 100,000 schedules, issue 17)."""
        # Read once: looking the entry points up costs more than parsing a schedule.
        action_types = registered_action_types()
        for snapshot in self.collection.stream():
            try:
                entry = entry_from_document(snapshot.to_dict() or {}, action_types, self._egress)
            except ValueError as exc:  # one bad document must not blind the audit to the rest
                log.error("registry document unreadable; its schedule is not audited",
                          document=snapshot.id, error=str(exc))
                continue
            if self._owns(entry.owner):
                yield entry

    def get(self, schedule_id: str) -> Entry | None:
        """One schedule's entry, or None."""
        snapshot = self.collection.document(document_id(schedule_id)).get()
        if not snapshot.exists:
            return None
        entry = entry_from_document(snapshot.to_dict() or {}, egress=self._egress)
        return entry if self._owns(entry.owner) else None

    def foreign_owners(self, schedule_ids: Iterable[str]) -> dict[str, str]:
        """Which of these schedules' documents another deployment owns (`scheduler.ownership`),
        by schedule ID: its owner. One batched read of one field per 500 schedules."""
        ids = list(schedule_ids)
        if self.owner is None or not ids:
            return {}
        by_doc = {document_id(i): i for i in ids}
        found = {}
        for start in range(0, len(ids), _BATCH):
            refs = [self.collection.document(document_id(i)) for i in ids[start:start + _BATCH]]
            for snapshot in self.client.get_all(refs, field_paths=["owner"]):
                owner = (snapshot.to_dict() or {}).get("owner") if snapshot.exists else None
                if owner is not None and owner != self.owner:
                    found[by_doc[snapshot.id]] = str(owner)
        return found

    def hold(self, entries: Iterable[Entry], now: datetime) -> dict[str, Entry]:
        """Owe nothing from `now` on for these schedules (before their jobs are written);
        returns the entries as they now stand."""
        held = {e.schedule_id: e if e.owed.paused_since is not None
                else replace(e, owed=replace(e.owed, paused_since=now), next_fire_time=None)
                for e in entries}
        self._write((document_id(e.schedule_id), document_of(e.owed.schedule, e.owed.owed_since,
                                                             e.owed.paused_since, now, self.owner))
                    for e in held.values())
        return held

    def settle(self, schedules: Sequence[Schedule], previous: dict[str, Entry],
               now: datetime) -> int:
        """Write what each schedule owes now that its job matches it (only what changed);
        returns how many documents were written."""
        writes = []
        for schedule in schedules:
            owed = settled(schedule, previous.get(schedule.id), now, self.owner)
            if owed is not None:
                writes.append((document_id(schedule.id),
                               document_of(schedule, owed.owed_since, owed.paused_since, now,
                                           self.owner)))
        self._write(writes)
        return len(writes)

    def resume(self, entry: Entry, now: datetime) -> None:
        """A resumed job owes its slots from `now` on."""
        schedule = replace(entry.owed.schedule, paused=False)
        self._write([(document_id(entry.schedule_id),
                      document_of(schedule, now, None, now, self.owner))])

    def forget(self, schedule_id: str) -> None:
        """Delete one schedule's document if this deployment owns it (before its job)."""
        ref = self.collection.document(document_id(schedule_id))
        snapshot = ref.get(field_paths=["owner"])
        if snapshot.exists and self._owns((snapshot.to_dict() or {}).get("owner")):
            ref.delete()

    def delete(self, schedule_ids: Iterable[str]) -> None:
        """Forget these schedules (before their jobs are deleted)."""
        ids = list(schedule_ids)
        for start in range(0, len(ids), _BATCH):
            batch = self.client.batch()
            for schedule_id in ids[start:start + _BATCH]:
                batch.delete(self.collection.document(document_id(schedule_id)))
            batch.commit()

    def _write(self, writes: Iterable[tuple[str, dict[str, Any]]]) -> None:
        pending = list(writes)
        for start in range(0, len(pending), _BATCH):
            batch = self.client.batch()
            for doc_id, fields in pending[start:start + _BATCH]:
                batch.set(self.collection.document(doc_id), fields)
            batch.commit()
