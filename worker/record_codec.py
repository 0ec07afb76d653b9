"""One codec for the ledger's records (`worker.ledger.Execution`, `ScheduleState`), built from
their dataclass fields, so that each form of a record (a Firestore document, a SQLite row, the
history's JSON) says only how it writes a time and which fields it holds, and a field added to
a record reaches every form at once.

How a field is written follows its type: str, int and float as they are; an enum as its value;
a type with `to_json`/`from_json` (`FireMessage`) as that JSON text; a datetime as the form's
`Times` says. A field typed `X | None` is left None (a store leaves it out) and reads back as
None when absent; any other field absent is a ValueError naming it. A type with no written form
is a TypeError when the codec is built, that is on import, not on the first write.
"""

from __future__ import annotations

import dataclasses
import operator
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
Convert = Callable[[Any], Any]
Write = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Times:
    """How one form writes an aware datetime (given the field's name, for its errors) and
    reads it back."""

    write: Callable[[datetime, str], Any]
    read: Callable[[Any], datetime]


def field_names(record_type: type[Any], prefix: str = "") -> tuple[str, ...]:
    """The names of `record_type`'s fields that start with `prefix`, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(record_type) if f.name.startswith(prefix))


def _declared(hint: Any) -> tuple[Any, bool]:
    """The type a field holds, and whether it may be None."""
    if get_origin(hint) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(kinds) == 1:
            return kinds[0], len(kinds) < len(get_args(hint))
    return hint, False


def _converters(owner: str, name: str, kind: Any, times: Times) -> tuple[Write | None,
                                                                         Convert | None]:
    """How a field of type `kind` is written (given the value and the field's name) and read;
    None: as it is."""
    if kind is datetime:
        return times.write, times.read
    if kind in (str, float, bool):
        return None, None
    if kind is int:
        return None, int
    if isinstance(kind, type) and issubclass(kind, Enum):
        return (lambda value, _name: value.value), kind
    if hasattr(kind, "to_json") and hasattr(kind, "from_json"):
        return (lambda value, _name: value.to_json()), kind.from_json
    raise TypeError(f"{owner}.{name}: no stored form for a {kind!r}")


class RecordCodec(Generic[R]):
    """The form of a `record_type` (a dataclass) in which datetimes are written as `times`
    says, holding the fields `names` (default: all of them, in declaration order)."""

    def __init__(self, record_type: type[R], times: Times,
                 names: Iterable[str] | None = None) -> None:
        self.record_type = record_type
        hints = get_type_hints(record_type)
        declared = {f.name: _declared(hints[f.name]) for f in dataclasses.fields(record_type)}
        self.names: tuple[str, ...] = tuple(declared) if names is None else tuple(names)
        unknown = [name for name in self.names if name not in declared]
        if unknown:
            raise ValueError(f"{record_type.__name__}: no fields named {', '.join(unknown)}")
        self._fields: list[tuple[str, bool, Convert | None]] = []
        self._writers: list[tuple[str, Write]] = []
        for name in self.names:
            kind, optional = declared[name]
            write, read = _converters(record_type.__name__, name, kind, times)
            self._fields.append((name, optional, read))
            if write is not None:
                self._writers.append((name, write))
        if not self.names:
            raise ValueError(f"{record_type.__name__}: a form holds at least one field")
        getter = operator.attrgetter(*self.names)
        # attrgetter of one name returns the value itself, not a 1-tuple.
        self._read_all = getter if len(self.names) > 1 else lambda record: (getter(record),)

    def encode(self, record: R, **given: Any) -> dict[str, Any]:
        """The record's fields in this form, None where a field is None; `given` replaces a
        field's value before it is written."""
        # The hot path of every ledger write: one attrgetter, then only the fields to convert.
        data = dict(zip(self.names, self._read_all(record), strict=True))
        data.update(given)
        for name, write in self._writers:
            value = data[name]
            if value is not None:
                data[name] = write(value, name)
        return data

    def decode(self, data: Mapping[str, Any], **given: Any) -> R:
        """The record from its fields in this form (absent ones: None) and `given`, which
        holds the fields the form keeps elsewhere (a document's ID) or overrides."""
        values = dict(given)
        for name, optional, read in self._fields:
            if name in given:
                continue
            raw = data.get(name)
            if raw is None:
                if not optional:
                    raise ValueError(f"{name}: missing in a stored record")
                continue
            values[name] = raw if read is None else read(raw)
        return self.record_type(**values)

    def values(self, record: R) -> dict[str, Any]:
        """This form's fields of `record`, as the record holds them (not encoded)."""
        return {name: getattr(record, name) for name in self.names}
