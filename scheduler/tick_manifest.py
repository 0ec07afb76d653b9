"""Tick mode's sync manifest: what the control module last wrote, so a no-op sync reads little.

A sync compares each schedule's `sync_digest` with its document's. Reading that one field of
every document costs a stream of the whole deployment (100,000 documents: 17-31 s on the
emulator, bench/README.md), so the control module also keeps a manifest of what it wrote:
`BUCKETS` documents `{collection_prefix}schedule_manifest/{owner}-{bucket}`, a document's
bucket the first two hex digits of its ID (a sha256: evenly spread), each holding `digests`,
a map document ID -> `sync_digest`. A no-op sync then reads 256 small documents.

Why it can be trusted: every document write of tick mode's control module
(`scheduler.tick_sync.TickSyncer.commit`) updates its bucket's entry **in the same commit**, so
a manifest never claims a write that did not happen, nor misses one that did. A bucket only
counts once a full rewrite from its real documents marked it `complete` (`repair`); a partial
bucket (written by a merge before any repair) counts as missing.

What it does not see: a document edited or deleted behind the control module's back (by hand,
by jobs mode). So a sync reads a bucket's real documents (`real`) whenever the bucket disagrees
with the desired set or is missing, rewrites the bucket from them, and `sync --verify` (and the
API's `verify`) reads every document, as before the manifest. The tick's own writes
(`next_fire_time`) change no digest.

Limits: 1 MiB per bucket is about 9,000 entries, so about 2.3 million schedules a deployment;
a bucket is written at most once per commit (all its entries merged into one write), and a
commit of `BATCH` writes counts its bucket writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from scheduler.logs import get_logger

log = get_logger(__name__)

# Firestore's limit of writes per commit (bucket writes included).
BATCH = 500
# One bucket per value of a document ID's first two hex digits.
BUCKET_CHARS = 2
BUCKETS = tuple(f"{i:02x}" for i in range(16 ** BUCKET_CHARS))
# Reads in parallel when the real documents of some buckets are read.
_READERS = 8


def bucket_of(doc_id: str) -> str:
    """The manifest bucket of a registry document."""
    return doc_id[:BUCKET_CHARS]


@dataclass(frozen=True)
class Bucket:
    """One manifest bucket as read: `digests` None when missing, partial or unreadable;
    `update_time` the version a repair's precondition names (None when absent)."""

    name: str
    digests: dict[str, str] | None
    update_time: Any = None


def _digests(data: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not data or data.get("complete") is not True:
        return None
    digests = data.get("digests")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        return None
    return {str(k): v for k, v in digests.items()}


def chunks(doc_ids: Sequence[str]) -> list[list[int]]:
    """Indexes of `doc_ids` grouped into commits: sorted by bucket so that a bucket is written
    by as few commits as possible, each commit within `BATCH` writes, its buckets counted."""
    order = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i])
    groups: list[list[int]] = []
    current: list[int] = []
    buckets: set[str] = set()
    for i in order:
        bucket = bucket_of(doc_ids[i])
        if len(current) + 1 + len(buckets | {bucket}) > BATCH:
            groups.append(current)
            current, buckets = [], set()
        current.append(i)
        buckets.add(bucket)
    if current:
        groups.append(current)
    return groups


class SyncManifest:
    """The manifest of one deployment (`owner`) next to `registry`'s documents."""

    def __init__(self, registry: Any, owner: str) -> None:
        self.registry = registry
        self.owner = owner

    @property
    def collection(self) -> Any:
        """The manifest collection."""
        return self.registry.client.collection(
            f"{self.registry.collection_prefix}schedule_manifest")

    def ref(self, bucket: str) -> Any:
        """A bucket's document."""
        return self.collection.document(f"{self.owner}-{bucket}")

    def read(self) -> dict[str, Bucket]:
        """Every bucket (one batched read of `len(BUCKETS)` documents)."""
        refs = [self.ref(bucket) for bucket in BUCKETS]
        found = {}
        for snapshot in self.registry.client.get_all(refs):
            bucket = snapshot.id.rsplit("-", 1)[-1]
            if snapshot.exists:
                found[bucket] = Bucket(bucket, _digests(snapshot.to_dict()), snapshot.update_time)
        return {bucket: found.get(bucket, Bucket(bucket, None)) for bucket in BUCKETS}

    def stream_all(self) -> dict[str, str]:
        """Every document of this deployment's `sync_digest`, by document ID: one query of one
        field (the full verify)."""
        query = self.registry.collection.where(
            filter=firestore.FieldFilter("owner", "==", self.owner)).select(["sync_digest"])
        return {s.id: str((s.to_dict() or {}).get("sync_digest", "")) for s in query.stream()}

    def real(self, buckets: Iterable[str]) -> dict[str, str]:
        """The `sync_digest` of this deployment's documents in `buckets` (one ID-range query
        per bucket, in parallel)."""
        with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="scion-verify") as pool:
            parts = list(pool.map(self._real, buckets))
        return {doc_id: digest for part in parts for doc_id, digest in part.items()}

    def _real(self, bucket: str) -> dict[str, str]:
        collection = self.registry.collection
        name = FieldPath.document_id()
        query = (collection.where(filter=firestore.FieldFilter("owner", "==", self.owner))
                 .where(filter=firestore.FieldFilter(name, ">=", collection.document(bucket)))
                 # Hex IDs: "g" sorts after every ID of the bucket.
                 .where(filter=firestore.FieldFilter(name, "<", collection.document(bucket + "g")))
                 .select(["sync_digest"]))
        return {s.id: str((s.to_dict() or {}).get("sync_digest", "")) for s in query.stream()}

    def digests(self, desired: dict[str, str], *, verify: bool = False,
                ignored: Collection[str] | None = None) -> dict[str, str]:
        """This deployment's documents' `sync_digest`, by document ID, as a plan trusts them:
        from the manifest (this manifest), except the buckets that are missing or
        disagree with `desired` (document ID -> the digest its schedule wants; a document in
        `ignored`, or any when it is None, may be there undesired): those are read from their
        documents and rewritten. With `verify`, or when most buckets must be read, every
        document is read (one query)."""
        read = self.read()
        want: dict[str, dict[str, str]] = {bucket: {} for bucket in BUCKETS}
        for doc_id, digest in desired.items():
            want[bucket_of(doc_id)][doc_id] = digest
        suspect = [b for b in BUCKETS if verify or not _agrees(read[b].digests, want[b], ignored)]
        if not suspect:
            return {k: v for bucket in read.values() for k, v in (bucket.digests or {}).items()}
        real = (self.stream_all() if len(suspect) > len(BUCKETS) // 2
                else self.real(suspect))
        trusted = {k: v for b in BUCKETS if b not in suspect
                   for k, v in (read[b].digests or {}).items()}
        repaired = self.repair(read, real, suspect)
        log.info("tick mode sync verified documents", buckets=len(suspect), documents=len(real),
                 manifest_buckets_rewritten=repaired)
        return {**trusted, **{k: v for k, v in real.items() if bucket_of(k) in suspect}}

    def repair(self, read: Mapping[str, Bucket], real: Mapping[str, str],
               buckets: Iterable[str]) -> int:
        """Rewrite each of `buckets` whose manifest differs from `real` (its documents as just
        read), on the condition that the bucket is still as `read` (else a sync's commit came
        in between, and the next sync looks again); returns how many were rewritten."""
        by_bucket: dict[str, dict[str, str]] = {bucket: {} for bucket in buckets}
        for doc_id, digest in real.items():
            if bucket_of(doc_id) in by_bucket:
                by_bucket[bucket_of(doc_id)][doc_id] = digest
        stale = [(read[b], digests) for b, digests in by_bucket.items()
                 if read[b].digests != digests]
        with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="scion-repair") as pool:
            return sum(pool.map(lambda item: self._rewrite(*item), stale))

    def _rewrite(self, bucket: Bucket, digests: dict[str, str]) -> bool:
        fields = {"owner": self.owner, "complete": True, "digests": digests}
        ref = self.ref(bucket.name)
        try:
            if bucket.update_time is None:
                ref.create(fields)
            else:
                option = self.registry.client.write_option(last_update_time=bucket.update_time)
                ref.update(fields, option=option)
        except Exception as exc:  # a repair lost to a race: the next sync looks again
            log.warning("manifest bucket not rewritten", bucket=bucket.name, error=str(exc))
            return False
        return True

    def add(self, batch: Any, entries: Iterable[tuple[str, str | None]]) -> None:
        """Add to `batch` one write per bucket setting each entry (document ID -> its new
        `sync_digest`, None when the document is deleted)."""
        by_bucket: dict[str, dict[str, Any]] = {}
        for doc_id, digest in entries:
            by_bucket.setdefault(bucket_of(doc_id), {})[doc_id] = (
                firestore.DELETE_FIELD if digest is None else digest)
        for bucket, digests in by_bucket.items():
            batch.set(self.ref(bucket), {"owner": self.owner, "digests": digests}, merge=True)

    def drop(self) -> None:
        """Delete every bucket: the next sync reads every document and rebuilds them (after
        documents were written outside tick mode's sync, as by a migration)."""
        batch = self.registry.client.batch()
        for bucket in BUCKETS:
            batch.delete(self.ref(bucket))
        batch.commit()


def _agrees(manifest: dict[str, str] | None, want: dict[str, str],
            ignored: Collection[str] | None) -> bool:
    """Whether a bucket's manifest says its documents are as wanted: each wanted document there
    with its digest, and no other but those `ignored` (None: any other)."""
    if manifest is None or any(manifest.get(k) != v for k, v in want.items()):
        return False
    return ignored is None or all(k in want or k in ignored for k in manifest)
