"""Turning SQL rows into records shaped as the REST API returns them.

A :class:`RecordShape` says which row positions hold which fields, which parent
relationships nest (each with the position of its ``Id``, null when the lookup is empty),
and where child subquery results go, in SELECT order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..schema import Field

API_VERSION = "v59.0"

Converter = Callable[[object], object]


def sobject_url(object_name: str, record_id: str) -> str:
    return f"/services/data/{API_VERSION}/sobjects/{object_name}/{record_id}"


def _as_bool(value: object) -> object:
    return None if value is None else bool(value)


def _as_int(value: object) -> object:
    return None if value is None else int(value)


def _as_float(value: object) -> object:
    return None if value is None else float(value)


def unchanged(value: object) -> object:
    """The converter of values stored in their JSON form (text, dates, datetimes)."""
    return value


def json_converter(field: Field) -> Converter:
    """Stored value -> JSON value: booleans are stored 0/1, numbers may come back either way."""
    if field.type == "boolean":
        return _as_bool
    if field.type == "int":
        return _as_int
    if field.sql_type == "REAL":
        return _as_float
    return unchanged


@dataclass(frozen=True)
class FieldSlot:
    name: str
    index: int
    convert: Converter


@dataclass(frozen=True)
class ParentSlot:
    name: str  # relationship name, e.g. "Account"
    shape: RecordShape


@dataclass(frozen=True)
class ChildSlot:
    name: str  # child relationship name, e.g. "OrderItems"


@dataclass
class RecordShape:
    object_name: str
    id_index: int
    slots: list[FieldSlot | ParentSlot | ChildSlot] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return any(slot.name == name for slot in self.slots)

    def build(
        self, row: tuple, children: Mapping[str, Mapping[str, list[dict]]] | None = None
    ) -> dict | None:
        """The record for ``row``; None when its Id is null (an empty lookup).

        ``children`` maps a child relationship name to the child records of each parent Id.
        """
        record_id = row[self.id_index]
        if record_id is None:
            return None
        record: dict = {
            "attributes": {"type": self.object_name, "url": sobject_url(self.object_name, record_id)}
        }
        for slot in self.slots:
            if isinstance(slot, FieldSlot):
                record[slot.name] = slot.convert(row[slot.index])
            elif isinstance(slot, ParentSlot):
                record[slot.name] = slot.shape.build(row)
            else:
                found = (children or {}).get(slot.name, {}).get(record_id)
                record[slot.name] = (
                    {"totalSize": len(found), "done": True, "records": found} if found else None
                )
        return record
