"""Reads and commits of concurrent callers, sent to Firestore together (`worker.coalescer`):
the reads of fires handled at the same moment leave as one BatchGetDocuments and their commits
as one Commit.

A Commit is all or nothing, so when a combined commit fails a precondition it is split in
halves and each half committed again (recursively), and only the group that really lost its
race is told so; a tentative group (a fast-path claim, which falls back to a read anyway) is not
retried there but told at once. Groups that touch the same document never share a Commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as api_exceptions

from worker.coalescer import Coalescer
from worker.firestore_wire import FirestoreWire, StoredDocument, Write

# A failed create precondition is AlreadyExists (a Conflict), a stale update_time is
# FailedPrecondition; either means another writer got there first.
LOST_RACE = (api_exceptions.Conflict, api_exceptions.FailedPrecondition, api_exceptions.NotFound)

# Errors that one group of a combined Commit can cause by itself (a value the wire cannot
# encode, a document the service refuses); splitting finds the group.
_GROUP_ERRORS = (TypeError, ValueError, api_exceptions.InvalidArgument)

# Fires handled at once that share one read or one commit. A Commit takes at most 500 writes
# and a group has at most two.
MAX_BATCH = 100

# What one group's commit came to: the new `update_time` of each write, None when it lost a
# race, or the error that failed it.
GroupResult = list[Any] | BaseException | None


@dataclass(frozen=True)
class CommitGroup:
    """The writes of one caller, committed atomically (possibly with other callers' groups).
    `tentative`: a guess that falls back to a read when it fails."""

    writes: list[Write]
    tentative: bool = False


class FirestoreBatches:
    """Batched reads and commits over one `FirestoreWire`; safe for many threads."""

    def __init__(self, wire: FirestoreWire, *, max_batch: int = MAX_BATCH) -> None:
        self.wire = wire
        # One sender each: while its call is in flight the next batch gathers, so batches grow
        # with the load. Two senders halved the batches, and Firestore's cost is mostly per
        # call (bench_worker: ~25% fewer messages/s with two).
        self._reader: Coalescer[list[str], list[StoredDocument | None]] = Coalescer(
            "firestore-read", self.read_batch, max_batch=max_batch)
        self._committer: Coalescer[CommitGroup, list[Any] | None] = Coalescer(
            "firestore-commit", self.commit_batch, max_batch=max_batch)

    def get_all(self, names: list[str]) -> list[StoredDocument | None]:
        """The documents in the order of `names` (None where absent), read together with other
        threads' reads."""
        return self._reader.call(names)

    def read_batch(self, groups: Sequence[list[str]]) -> list[list[StoredDocument | None]]:
        """Read several callers' documents in one call; each caller's in its order."""
        found = self.wire.get_all([name for group in groups for name in group])
        return [[found.get(name) for name in group] for group in groups]

    def commit(self, writes: list[Write], *, tentative: bool = False) -> list[Any] | None:
        """Commit the writes atomically under their preconditions, together with other
        threads' commits; the new `update_time` of each write, or None when one failed.
        `tentative`: a guess that falls back to a read when it fails, so a failed combined
        commit does not split to find out whether this group was the one that lost."""
        return self._committer.call(CommitGroup(writes, tentative))

    def commit_batch(self, groups: Sequence[CommitGroup]) -> list[GroupResult]:
        """Commit several callers' groups, as few Commits as their documents and races allow;
        each group's own outcome, in order."""
        combined: list[int] = []
        alone: list[int] = []
        touched: set[str] = set()
        for index, group in enumerate(groups):
            paths = {write.name for write in group.writes}
            (alone if paths & touched else combined).append(index)
            touched |= paths
        results: list[GroupResult] = [None] * len(groups)
        self._commit_together(groups, combined, results)
        for index in alone:
            self._commit_together(groups, [index], results)
        return results

    def _commit_together(self, groups: Sequence[CommitGroup], indices: list[int],
                         results: list[GroupResult]) -> None:
        """Commit the groups at `indices` as one Commit. When a precondition fails, the
        tentative groups are told at once and the others committed again without them; among
        those, a failed commit is split in halves, each half committed the same way, so that
        one lost race among n groups costs about 2 log2(n) more Commits rather than n, and each
        group still gets its own outcome. A request one group's data can make invalid is split
        the same way; any other error (the store unavailable after the client's retries) is
        every group's outcome at once, rather than 2n - 1 more Commits that would each retry
        it again."""
        if not indices:
            return
        try:
            versions = self.commit_now([write for index in indices
                                        for write in groups[index].writes])
        except _GROUP_ERRORS as exc:
            if len(indices) == 1:
                results[indices[0]] = exc
                return
            versions, lost_race = None, False
        except Exception as exc:
            for index in indices:
                results[index] = exc
            return
        else:
            lost_race = versions is None
        if versions is not None:
            offset = 0
            for index in indices:
                size = len(groups[index].writes)
                results[index] = versions[offset:offset + size]
                offset += size
            return
        if lost_race:
            certain = [index for index in indices if not groups[index].tentative]
            if len(certain) < len(indices):
                self._commit_together(groups, certain, results)
                return
        if len(indices) > 1:
            middle = len(indices) // 2
            self._commit_together(groups, indices[:middle], results)
            self._commit_together(groups, indices[middle:], results)

    def commit_now(self, writes: list[Write]) -> list[Any] | None:
        """One Commit of `writes`, alone: the new versions, or None when it lost a race."""
        try:
            return self.wire.commit(writes)
        except LOST_RACE:
            return None
