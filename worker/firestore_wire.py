"""The Firestore calls on the hot paths of the ledger and of the tick, as plain protobuf messages.

The ledger reads documents (BatchGetDocuments) and commits guarded writes (Commit) a few times
per fire. Through google-cloud-firestore's document layer (proto-plus wrappers, snapshots, field
paths) each of those cost more CPU in this process than the Firestore work itself: it was most
of the worker's ~1.5 ms of CPU per message (bench/README.md). Here the same RPCs go over the
client's own gRPC channel, with its metadata, retry and error mapping
(`google.api_core.gapic_v1.method.wrap_method`), but the messages are built and read as the
generated protobuf classes directly. The tick (`worker.tick_store`) reads and advances the
registry's documents the same way, a RunQuery for its due query: through the snapshots, a
document read cost it about three times as much.

Documents are written whole and without their empty fields: a field that is None is left out
rather than stored as a null, and reads back as None. The Firestore emulator spends several
times more CPU on a document with null fields than on the same document without them, and a
whole-document write (no field mask) guarded by `update_time` is the exact "replace what I
read" that an optimistic commit needs. The tick's advance of a registry document's next fire
time (`worker.tick_store`) is the one masked write: that field only, a None stored as a null.

Only the value types the ledger stores are supported: str, bool, int, float and aware
datetimes (plus nulls, read back as None, in documents written by older versions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import gapic_v1
from google.api_core import retry as retries
from google.cloud import firestore
from google.cloud.firestore_v1.types import document as document_types
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import query as query_types

from worker.server_clock import ServerClock

_Value = document_types.Value.pb()
_CommitRequest = firestore_types.CommitRequest.pb()
_CommitResponse = firestore_types.CommitResponse.pb()
_BatchGetRequest = firestore_types.BatchGetDocumentsRequest.pb()
_BatchGetResponse = firestore_types.BatchGetDocumentsResponse.pb()
_RunQueryRequest = firestore_types.RunQueryRequest.pb()
_RunQueryResponse = firestore_types.RunQueryResponse.pb()
# For a caller that builds the query `FirestoreWire.run_query` runs.
StructuredQuery = query_types.StructuredQuery.pb()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A read made only to learn the server's time fails fast rather than retrying for minutes.
_CLOCK_READ_TIMEOUT_S = 5.0

# The retry policies of the generated client for these two methods (google-cloud-firestore's
# transports/base.py): a Commit is retried only where it cannot have been applied twice in a
# harmful way (a guarded write that already landed fails its precondition on the retry, which
# the ledger recognises).
_READ_RETRY = retries.Retry(
    initial=0.1, maximum=60.0, multiplier=1.3, timeout=300.0,
    predicate=retries.if_exception_type(
        api_exceptions.DeadlineExceeded, api_exceptions.InternalServerError,
        api_exceptions.ResourceExhausted, api_exceptions.ServiceUnavailable,
    ),
)
_COMMIT_RETRY = retries.Retry(
    initial=0.1,
    maximum=60.0,
    multiplier=1.3,
    timeout=60.0,
    predicate=retries.if_exception_type(
        api_exceptions.ResourceExhausted, api_exceptions.ServiceUnavailable
    ),
)


def encode_timestamp(moment: datetime) -> Any:
    """An aware datetime as a protobuf Timestamp (microsecond precision, as Firestore keeps)."""
    stamp = _Value()
    _encode_value(moment, stamp, "timestamp")
    return stamp.timestamp_value


def decode_timestamp(stamp: Any) -> datetime:
    """A protobuf Timestamp as an aware UTC datetime, truncated to microseconds."""
    return _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def _encode_value(value: Any, target: Any, name: str) -> None:
    # Ordered by how often the ledger writes each type; bool before int, since a bool is an int.
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: must be timezone-aware (got naive {value.isoformat()})")
        # Set in place: building a Timestamp and copying it in costs twice as much.
        delta = value - _EPOCH
        stamp = target.timestamp_value
        stamp.seconds = delta.days * 86_400 + delta.seconds
        stamp.nanos = delta.microseconds * 1000
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    else:
        raise TypeError(f"{name}: cannot store a {type(value).__name__} in a ledger document")


def _decode_value(value: Any) -> Any:
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return value.string_value
    if kind == "integer_value":
        return value.integer_value
    if kind == "timestamp_value":
        return decode_timestamp(value.timestamp_value)
    if kind == "double_value":
        return value.double_value
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "null_value" or kind is None:
        return None
    raise ValueError(f"unexpected Firestore value type {kind} in a ledger document")


def _decode_leniently(value: Any) -> Any:
    try:
        return _decode_value(value)
    except ValueError:
        return value  # the protobuf Value itself: its reader reports the document unreadable


def _stored(document: Any, lenient: bool) -> StoredDocument:
    decode = _decode_leniently if lenient else _decode_value
    fields = {key: decode(value) for key, value in document.fields.items()}
    return StoredDocument(document.name.rsplit("/", 1)[1], fields, document.update_time)


def encode_fields(data: Mapping[str, Any], target: Any) -> None:
    """Write `data` into a Document's fields, leaving out the fields that are None."""
    for name, value in data.items():
        if value is not None:
            _encode_value(value, target[name], name)


@dataclass(frozen=True)
class StoredDocument:
    """A document as read: its fields (absent ones read as None through `.get`) and the
    `update_time` a guarded write must match."""

    id: str
    fields: dict[str, Any]
    update_time: Any


@dataclass(frozen=True)
class Write:
    """One whole-document write, or a delete when `data` is None. `update_time` None: the
    document must not exist yet; otherwise it must still be at that version. `blind`: no
    precondition at all (the last writer wins), for records that no decision reads. `masked`:
    only the fields of `data` are written, the others kept, and a None is stored as a null
    (what the client library's `update` does)."""

    name: str
    data: Mapping[str, Any] | None
    update_time: Any = None
    blind: bool = False
    masked: bool = False

    def __post_init__(self) -> None:
        if self.data is None and self.update_time is None and not self.blind:
            raise ValueError(f"{self.name}: a delete needs the version it removes (or blind)")


class FirestoreWire:
    """BatchGetDocuments and Commit for one database, on the channel of `client`. Each reply's
    server time (`read_time`, `commit_time`) is reported to `clock`."""

    def __init__(self, client: firestore.Client, clock: ServerClock | None = None) -> None:
        self._clock = clock
        # The client's own channel (emulator or production credentials alike), its database
        # and its metadata (resource prefix; the emulator's owner token), so that these calls
        # go exactly where the rest of the client's calls go.
        channel = client._firestore_api.transport.grpc_channel
        self.database = client._database_string
        self._documents = f"{self.database}/documents"
        self._metadata = (*client._rpc_metadata,
                          gapic_v1.routing_header.to_grpc_metadata((("database", self.database),)))
        self._batch_get = gapic_v1.method.wrap_method(
            channel.unary_stream("/google.firestore.v1.Firestore/BatchGetDocuments",
                                 request_serializer=_BatchGetRequest.SerializeToString,
                                 response_deserializer=_BatchGetResponse.FromString),
            default_retry=_READ_RETRY, default_timeout=300.0)
        self._run_query = gapic_v1.method.wrap_method(
            channel.unary_stream("/google.firestore.v1.Firestore/RunQuery",
                                 request_serializer=_RunQueryRequest.SerializeToString,
                                 response_deserializer=_RunQueryResponse.FromString),
            default_retry=_READ_RETRY, default_timeout=300.0)
        self._query_metadata = (*client._rpc_metadata, gapic_v1.routing_header.to_grpc_metadata(
            (("parent", self._documents),)))
        self._commit = gapic_v1.method.wrap_method(
            channel.unary_unary("/google.firestore.v1.Firestore/Commit",
                                request_serializer=_CommitRequest.SerializeToString,
                                response_deserializer=_CommitResponse.FromString),
            default_retry=_COMMIT_RETRY, default_timeout=60.0)

    def name(self, collection: str, document_id: str) -> str:
        """The full resource name of a document."""
        return f"{self._documents}/{collection}/{document_id}"

    def get_all(self, names: Sequence[str], *, quick: bool = False,
                field_paths: Sequence[str] | None = None,
                lenient: bool = False) -> dict[str, StoredDocument | None]:
        """The documents by name (None where absent), read in one BatchGetDocuments. `quick`:
        one try with a short deadline, no retries. `field_paths`: only these fields are read.
        `lenient`: a value of a type not listed above is kept as its protobuf `Value` instead
        of failing the read (for a reader that reports such a document itself)."""
        request = _BatchGetRequest(database=self.database, documents=list(dict.fromkeys(names)))
        if field_paths is not None:
            request.mask.field_paths.extend(field_paths)
        found: dict[str, StoredDocument | None] = {}
        options: dict[str, Any] = {"retry": None, "timeout": _CLOCK_READ_TIMEOUT_S} if quick else {}
        sent = self._sent()
        for response in self._batch_get(request, metadata=self._metadata, **options):
            if sent is not None:
                self._observe(response.read_time, sent)
                sent = None
            kind = response.WhichOneof("result")
            if kind == "found":
                found[response.found.name] = _stored(response.found, lenient)
            elif kind == "missing":
                found[response.missing] = None
        return found

    def run_query(self, query: Any, *, lenient: bool = False) -> list[StoredDocument]:
        """The documents a `StructuredQuery` of this database's documents finds, in its order
        (`lenient` as in `get_all`)."""
        request = _RunQueryRequest(parent=self._documents)
        request.structured_query.CopyFrom(query)
        return [_stored(response.document, lenient)
                for response in self._run_query(request, metadata=self._query_metadata)
                if response.HasField("document")]

    def commit(self, writes: Sequence[Write]) -> list[Any]:
        """Apply the writes atomically; the new `update_time` of each, in order (empty for a
        delete). A failed precondition raises (AlreadyExists, FailedPrecondition or NotFound)
        and writes nothing."""
        request = _CommitRequest(database=self.database)
        for write in writes:
            pb = request.writes.add()
            if write.data is None:
                pb.delete = write.name
            elif write.masked:
                pb.update.name = write.name
                for name, value in write.data.items():
                    if value is None:
                        pb.update.fields[name].null_value = 0
                    else:
                        _encode_value(value, pb.update.fields[name], name)
                pb.update_mask.field_paths.extend(write.data)
            else:
                pb.update.name = write.name
                encode_fields(write.data, pb.update.fields)
            if write.blind:
                continue
            if write.update_time is None:
                pb.current_document.exists = False
            else:
                pb.current_document.update_time.CopyFrom(write.update_time)
        sent = self._sent()
        response = self._commit(request, metadata=self._metadata)
        self._observe(response.commit_time, sent)
        return [result.update_time for result in response.write_results]

    def sync_clock(self, name: str) -> None:
        """Read the document `name` (absent or not) only to measure the server's time."""
        self.get_all([name], quick=True)

    def _sent(self) -> datetime | None:
        return None if self._clock is None else self._clock.local()

    def _observe(self, stamp: Any, sent: datetime | None) -> None:
        if self._clock is not None and sent is not None and stamp.seconds:
            self._clock.observe(decode_timestamp(stamp), sent, self._clock.local())
