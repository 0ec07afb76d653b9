"""The ledger's raw Firestore calls (`worker.firestore_wire`) against the emulator: values
round-trip exactly, None is left out and nulls written by other clients read as None, and a
failed precondition writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions

from worker.firestore_wire import FirestoreWire, Write, decode_timestamp, encode_timestamp

pytestmark = pytest.mark.emulator


@pytest.fixture
def client(firestore_emulator: str, project_id: str) -> Iterator[Any]:
    from google.cloud import firestore

    client = firestore.Client(project=project_id)
    yield client
    client.close()


def test_timestamps_round_trip_to_the_microsecond() -> None:
    for moment in (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
                   datetime(2026, 2, 28, 23, 59, 59, 123_456, tzinfo=UTC),
                   datetime(2026, 3, 29, 2, 30, tzinfo=UTC) + timedelta(microseconds=1)):
        assert decode_timestamp(encode_timestamp(moment)) == moment


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_timestamp(datetime(2026, 1, 1))


def test_values_round_trip_and_none_is_left_out(client: Any) -> None:
    wire = FirestoreWire(client)
    name = wire.name("wire", "doc")
    moment = datetime(2026, 11, 23, 9, 0, 0, 250_000, tzinfo=UTC)
    data = {"s": "text", "i": 7, "f": 0.25, "b": True, "t": moment, "gone": None}
    [version] = wire.commit([Write(name, data)])
    stored = wire.get_all([name])[name]
    assert stored is not None and stored.id == "doc" and stored.update_time == version
    assert stored.fields == {"s": "text", "i": 7, "f": 0.25, "b": True, "t": moment}
    # Other clients see the same document, without the empty field.
    assert client.collection("wire").document("doc").get().to_dict().keys() == {
        "s",
        "i",
        "f",
        "b",
        "t",
    }


def test_nulls_written_by_another_client_read_as_none(client: Any) -> None:
    client.collection("wire").document("old").set({"state": "running", "error": None})
    wire = FirestoreWire(client)
    stored = wire.get_all([wire.name("wire", "old"), wire.name("wire", "absent")])
    assert stored[wire.name("wire", "absent")] is None
    old = stored[wire.name("wire", "old")]
    assert old is not None and old.fields == {"state": "running", "error": None}


def test_a_guarded_write_replaces_the_whole_document(client: Any) -> None:
    wire = FirestoreWire(client)
    name = wire.name("wire", "replaced")
    [version] = wire.commit([Write(name, {"state": "running", "lease_until": datetime.now(UTC)})])
    wire.commit([Write(name, {"state": "succeeded", "lease_until": None}, version)])
    stored = wire.get_all([name])[name]
    assert stored is not None and stored.fields == {"state": "succeeded"}


def test_failed_preconditions_write_nothing(client: Any) -> None:
    wire = FirestoreWire(client)
    taken, fresh = wire.name("wire", "taken"), wire.name("wire", "fresh")
    [version] = wire.commit([Write(taken, {"n": 1})])
    with pytest.raises(api_exceptions.AlreadyExists):
        wire.commit([Write(fresh, {"n": 1}), Write(taken, {"n": 2})])
    wire.commit([Write(taken, {"n": 3}, version)])
    with pytest.raises(api_exceptions.FailedPrecondition):
        wire.commit([Write(fresh, {"n": 1}), Write(taken, {"n": 4}, version)])
    found = wire.get_all([taken, fresh])
    assert found[fresh] is None
    assert found[taken] is not None and found[taken].fields == {"n": 3}


def test_an_unsupported_value_names_its_field(client: Any) -> None:
    wire = FirestoreWire(client)
    with pytest.raises(TypeError, match="payload: cannot store a dict"):
        wire.commit([Write(wire.name("wire", "bad"), {"payload": {"nested": 1}})])
