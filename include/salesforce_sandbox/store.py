"""The sandbox org's records: SQLite storage written through Salesforce's validation and Order rules.

Writes take JSON values as the REST API receives them and fail with the errors Salesforce
answers (:class:`~salesforce_sandbox.errors.SalesforceError`); reads answer in the REST
shape. Storage follows the conventions in :mod:`salesforce_sandbox.schema`; two internal
tables sit beside the object tables: ``_sandbox_sequences`` (id counters, auto-numbers
and the last issued modstamp, so a re-opened file continues where it stopped) and
``_sandbox_deleted_log`` (what ``deleted/`` reports).

Filters written ``+IsDeleted = 0`` keep SQLite's planner from choosing the index on
IsDeleted (one value for nearly every row) over a selective index such as OrderId.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

from .changes import CHANGE_ORIGIN, CREATE, DELETE, UPDATE, RecordChange
from .ddl import create_tables, quote_ident
from .errors import SalesforceError, not_found
from .ids import make_id, to_18
from .schema import Field, Schema, SObject, build_schema

SOBJECTS_PATH = "/services/data/v59.0/sobjects"
INTEGRATION_USERNAME = "integration@sandbox.example.com"
AUTO_NUMBER_START = 100  # a new org's first auto-number: OrderNumber 00000100
REPLICATION_WINDOW = timedelta(days=30)  # how far back updated/ and deleted/ may reach
MAX_REPLICATION_IDS = 600_000

DRAFT_CATEGORY = "Draft"
ACTIVATED_CATEGORY = "Activated"
# Lookups of an Order that may change only while it is in Draft.
ORDER_FIELDS_LOCKED_WHEN_ACTIVATED = ("AccountId", "ContractId", "Pricebook2Id")

_AUTO_NUMBER_WIDTHS = {"OrderItemNumber": 10}
_DEFAULT_AUTO_NUMBER_WIDTH = 8
_BOOLEAN_DEFAULTS = {"IsActive": True}  # the schema has no default values for checkboxes
_MODSTAMP_SEQUENCE = "modstamp_ms"
_AUDIT_FIELDS = frozenset({"SystemModstamp", "LastModifiedDate", "LastModifiedById"})  # not a change event's changed fields
_IN_CHUNK = 500  # ids per `IN (...)` list, well under SQLite's bound-parameter limit

_TEXT_TYPES = frozenset(
    {"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox"}
)
_FLOAT_TYPES = frozenset({"double", "currency", "percent"})
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Dates and times


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.SSS+0000`` in UTC: how Salesforce writes a dateTime."""
    moment = as_utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}+0000"


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 dateTime (``Z``, ``+hh:mm`` or ``+hhmm``; none means UTC) or date, as aware UTC.
    Raises ValueError otherwise."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ValueError(f"not an ISO 8601 dateTime: {text!r}")
    return as_utc(datetime.fromisoformat(text))


def _to_ms(moment: datetime) -> int:
    return (as_utc(moment) - _EPOCH) // _MILLISECOND


def _from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MILLISECOND


@lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    # ``YYYY-MM-DDThh:mm:ss`` of a whole second since the epoch: format_datetime() without ``.SSS+0000``.
    return format_datetime(_from_ms(second * 1000))[: -len(".000+0000")]


def _stamp_text(ms: int) -> str:
    """``format_datetime(_from_ms(ms))``, without a datetime per stamp (bulk jobs issue thousands a second)."""
    second, millisecond = divmod(ms, 1000)
    return f"{_second_text(second)}.{millisecond:03d}+0000"


def _to_minute(moment: datetime) -> datetime:
    # updated/ and deleted/ ignore the seconds of their bounds.
    return as_utc(moment).replace(second=0, microsecond=0)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Values: JSON in, storage form in SQLite, JSON out


def _label(field: Field) -> str:
    return field.describe()["label"]


def _json_token(value: Any) -> str:
    """The JSON token kind Salesforce's parser names in its messages."""
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    return "VALUE_STRING"


def _type_error(field: Field, type_name: str, value: Any) -> SalesforceError:
    return SalesforceError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {type_name} from {_json_token(value)} value {value} "
        "or request may be missing a required field",
        fields=[field.name],
    )


def _coerce_text(field: Field, value: Any) -> str:
    if isinstance(value, dict | list):
        raise _type_error(field, "string", value)
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if field.length and len(text) > field.length:
        raise SalesforceError(
            "STRING_TOO_LONG",
            f"{_label(field)}: data value too large: {text} (max length={field.length})",
            fields=[field.name],
        )
    if field.type == "email" and not _EMAIL.fullmatch(text):
        raise SalesforceError(
            "INVALID_EMAIL_ADDRESS", f"{_label(field)}: invalid email address: {text}", fields=[field.name]
        )
    if field.restricted_picklist:
        allowed = field.active_picklist_values
        if field.type == "multipicklist":
            bad = next((v for v in text.split(";") if v not in allowed), None)
        else:
            bad = None if text in allowed else text
        if bad is not None:
            raise SalesforceError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{_label(field)}: bad value for restricted picklist field: {bad}",
                fields=[field.name],
            )
    return text


def _coerce_number(field: Field, value: Any) -> int | float:
    type_name = "int" if field.type == "int" else "double"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _type_error(field, type_name, value)
    try:
        number = float(value)
    except ValueError:
        raise _type_error(field, type_name, value) from None
    if not math.isfinite(number):
        raise _type_error(field, type_name, value)
    if field.type == "int":
        if not number.is_integer():
            raise _type_error(field, type_name, value)
        return int(number)
    return round(number, field.scale) if field.scale else number


def _coerce_boolean(field: Field, value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    raise _type_error(field, "boolean", value)


def _coerce_date(field: Field, value: Any) -> str:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise _type_error(field, "date", value)


def _coerce_datetime(field: Field, value: Any) -> str:
    try:
        return format_datetime(parse_datetime(value))
    except ValueError:
        raise _type_error(field, "datetime", value) from None


def coerce_value(field: Field, value: Any) -> Any:
    """A JSON value as the REST API receives it, in its storage form. References are only
    checked for type here; the store checks what they point at."""
    if value is None or (isinstance(value, str) and value == ""):
        # Salesforce stores an empty text as null and a cleared checkbox as false.
        return 0 if field.type == "boolean" else None
    if field.type in _TEXT_TYPES:
        return _coerce_text(field, value)
    if field.type == "boolean":
        return _coerce_boolean(field, value)
    if field.type == "int" or field.type in _FLOAT_TYPES:
        return _coerce_number(field, value)
    if field.type == "date":
        return _coerce_date(field, value)
    if field.type == "datetime":
        return _coerce_datetime(field, value)
    if not isinstance(value, str):
        raise _type_error(field, "id", value)
    return value


def json_value(field: Field, stored: Any) -> Any:
    """A stored value as the REST API answers it."""
    if stored is None:
        return None
    if field.type == "boolean":
        return bool(stored)
    if field.type == "int":
        return int(stored)
    if field.type in _FLOAT_TYPES:
        return float(stored)
    return stored


def _sql(template: str, *, params: int = 0, **identifiers: str | list[str]) -> str:
    """SQL text with ``{name}`` placeholders filled by quoted identifiers (a list becomes a
    comma-separated list) and ``{params}`` by that many ``?``. Identifiers come from the
    schema, never from requests; values are always bound parameters."""
    key = tuple((key, name if isinstance(name, str) else tuple(name)) for key, name in identifiers.items())
    return _cached_sql(template, params, key)


@lru_cache(maxsize=2048)
def _cached_sql(template: str, params: int, identifiers: tuple[tuple[str, Any], ...]) -> str:
    # Writes build the same few statements over and over (one per set of changed columns).
    quoted = {
        key: quote_ident(name) if isinstance(name, str) else ", ".join(map(quote_ident, name))
        for key, name in identifiers
    }
    return template.format(params=", ".join("?" * params), **quoted)


def _same_id(value: Any, record_id: str) -> bool:
    try:
        return to_18(value) == record_id
    except ValueError:
        return False


def _insert_sql(obj: SObject, columns: list[str]) -> str:
    return _sql(
        "INSERT INTO {table} ({columns}) VALUES ({params})",
        params=len(columns),
        table=obj.name,
        columns=columns,
    )


def _chunks(items: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _row_dicts(cursor: sqlite3.Cursor) -> Iterator[dict]:
    """The cursor's rows as dicts keyed by column name."""
    names = [column[0] for column in cursor.description]
    for row in cursor:
        yield dict(zip(names, row, strict=True))


# ---------------------------------------------------------------------------------------------
# Errors answered by the store


def _no_such_column(obj: SObject, name: str) -> SalesforceError:
    return SalesforceError("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}")


def _required_missing(names: list[str]) -> SalesforceError:
    return SalesforceError(
        "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(names)}]", fields=names
    )


def _external_id_not_found(name: str) -> SalesforceError:
    return not_found(f"Provided external ID field does not exist or is not accessible: {name}")


def _order_locked() -> SalesforceError:
    return SalesforceError(
        "ENTITY_IS_LOCKED",
        "Unable to modify activated or superseded Order: cannot delete Order, or add or remove Order Products",
    )


class Store:
    """The sandbox org's records in one SQLite database.

    ``lock`` serialises every use of ``conn`` (the HTTP layer holds it around each call,
    queries included); the store's own methods take it too, so direct callers are safe.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        schema: Schema | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.schema = schema or build_schema()
        self.clock = clock or _utc_now
        self.lock = threading.RLock()
        # Autocommit at the driver level: transactions are explicit SAVEPOINTs (see transaction()).
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        if str(path) != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self._savepoint_depth = 0
        # Called with the Order changes of each committed outermost transaction (the event bus).
        self.change_listeners: list[Callable[[list[RecordChange]], None]] = []
        self._pending_changes: list[RecordChange] = []
        # Highest value handed out per sequence, read from _sandbox_sequences on first use and kept
        # here: a claim costs no SQL, and a rolled-back write never gets its numbers reused.
        self._claimed: dict[str, int] = {}
        # Sequences claimed since their value was last committed to _sandbox_sequences.
        self._unsaved: set[str] = set()
        with self.lock:
            create_tables(self.conn, self.schema)
            self._create_internal_tables()
            self.integration_user_id = self._ensure_integration_user()
            self._sync_order_statuses()

    # -- connection, transactions, sequences -------------------------------------------------

    def _create_internal_tables(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS _sandbox_sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS _sandbox_deleted_log (sobject TEXT NOT NULL, id TEXT NOT NULL, deleted_date TEXT NOT NULL)"
        )
        self.conn.execute(
            "CREATE INDEX IF NOT EXISTS ix_sandbox_deleted_log ON _sandbox_deleted_log (sobject, deleted_date)"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-none: everything written inside is rolled back if the block raises. Nestable."""
        with self.lock:
            outermost = self._savepoint_depth == 0
            name = f"sandbox_sp_{self._savepoint_depth}"
            self._savepoint_depth += 1
            changes_before = len(self._pending_changes)
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
                if outermost:
                    self._save_sequences()  # committed together with the rows that use the values
            except BaseException:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
                del self._pending_changes[changes_before:]  # rolled back: never happened
                raise
            else:
                self.conn.execute(f"RELEASE {name}")
                if outermost:
                    self._unsaved.clear()
            finally:
                self._savepoint_depth -= 1
            if outermost and self._pending_changes:
                committed, self._pending_changes = self._pending_changes, []
                for listener in self.change_listeners:
                    listener(committed)

    def _claim(self, sequence: str, count: int = 1, at_least: int = 1) -> int:
        """Reserve ``count`` consecutive values of a sequence (none below ``at_least``); returns the first.

        Inside a transaction the new high-water mark is written when the outermost transaction
        commits (one write per sequence, however many claims), so a re-opened file never hands
        out a value that committed rows already use. Outside one it is written at once."""
        last = self._claimed.get(sequence)
        if last is None:
            saved = self.conn.execute("SELECT value FROM _sandbox_sequences WHERE name = ?", (sequence,))
            row = saved.fetchone()
            last = row[0] if row else 0
        first = max(last + 1, at_least)
        self._claimed[sequence] = first + count - 1
        self._unsaved.add(sequence)
        if self._savepoint_depth == 0:
            self._save_sequences()
            self._unsaved.clear()
        return first

    def _save_sequences(self) -> None:
        """Write the high-water marks claimed since the last save (a rolled-back save stays pending)."""
        if self._unsaved:
            self.conn.executemany(
                "INSERT INTO _sandbox_sequences (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(name, self._claimed[name]) for name in sorted(self._unsaved)],
            )

    def _next_stamp(self) -> str:
        """The clock's time, moved a millisecond past the last stamp when the clock has not advanced."""
        # The default clock's milliseconds without a datetime (a Bulk job takes thousands a second).
        now = time.time_ns() // 1_000_000 if self.clock is _utc_now else _to_ms(self.clock())
        with self.lock:
            return _stamp_text(self._claim(_MODSTAMP_SEQUENCE, at_least=now))

    def stamps_from_next_second(self) -> datetime:
        """Move the org's modification stamps on to the next whole second and return that second.

        SOQL compares datetimes in whole seconds, so a change that must read as later than the
        last one needs a later second. Tests call this instead of sleeping: every write after it
        is stamped at or after the returned moment, however fast or slow the machine is."""
        with self.lock:
            now = self._claim(_MODSTAMP_SEQUENCE, at_least=_to_ms(self.clock()))
            next_second = (now // 1000 + 1) * 1000
            self._claim(_MODSTAMP_SEQUENCE, at_least=next_second - 1)
        return _from_ms(next_second)

    def new_ids(self, sobject: str, count: int) -> list[str]:
        """Reserve ``count`` new record ids (for rows written with :meth:`bulk_insert`)."""
        obj = self._sobject(sobject)
        with self.lock:
            first = self._claim(f"id:{obj.name}", count)
        return [make_id(obj.key_prefix, n) for n in range(first, first + count)]

    def next_auto_numbers(self, sobject: str, field_name: str, count: int) -> list[str]:
        """Reserve ``count`` values of an auto-number field (``00000100``, ``00000101``, ...)."""
        obj = self._sobject(sobject)
        field = obj.field(field_name)
        if field is None or not field.auto_number:
            raise _no_such_column(obj, field_name)
        width = _AUTO_NUMBER_WIDTHS.get(field.name, _DEFAULT_AUTO_NUMBER_WIDTH)
        with self.lock:
            first = self._claim(f"autonumber:{obj.name}.{field.name}", count, at_least=AUTO_NUMBER_START)
        return [str(n).zfill(width) for n in range(first, first + count)]

    # -- schema --------------------------------------------------------------------------------

    def set_schema(self, schema: Schema) -> None:
        """Serve another org's metadata over the same tables (e.g. a Status picklist without Imported).
        Call it outside :meth:`transaction`: creating missing tables commits."""
        with self.lock:
            self.schema = schema
            create_tables(self.conn, schema)
            with self.transaction():
                self._sync_order_statuses()

    def _sobject(self, name: str) -> SObject:
        obj = self.schema.get(name) if isinstance(name, str) else None
        if obj is None:
            raise not_found()
        return obj

    # -- reads ---------------------------------------------------------------------------------

    def _fetch(self, obj: SObject, record_id: str) -> dict | None:
        cursor = self.conn.execute(_sql("SELECT * FROM {table} WHERE Id = ?", table=obj.name), (record_id,))
        return next(_row_dicts(cursor), None)

    def _fetch_many(self, obj: SObject, record_ids: Iterable[Any]) -> dict[str, dict]:
        """The rows of the well-formed ids among ``record_ids`` (15 or 18 characters), keyed by Id:
        one SELECT per 500 ids instead of one per id."""
        wanted = set()
        for record_id in record_ids:
            try:
                wanted.add(to_18(record_id))
            except ValueError:
                continue  # _live_record() answers MALFORMED_ID for it
        found: dict[str, dict] = {}
        for chunk in _chunks(sorted(wanted)):
            cursor = self.conn.execute(
                _sql("SELECT * FROM {table} WHERE Id IN ({params})", params=len(chunk), table=obj.name), chunk
            )
            found.update((row["Id"], row) for row in _row_dicts(cursor))
        return found

    def _live_record(
        self, obj: SObject, record_id: str, *, reading: bool, known: dict[str, dict] | None = None
    ) -> dict:
        """The record, or the error Salesforce answers for a malformed, unknown or deleted id.
        ``known``: rows read ahead by :meth:`_fetch_many`, looked up instead of the table."""
        if known is not None and isinstance(record_id, str) and record_id in known:
            # A key of ``known`` is a stored Id, already in its 18-character form.
            normalised = record_id
        else:
            normalised = self._normalised_id(obj, record_id, reading=reading)
        if not normalised.startswith(obj.key_prefix):
            row = None
        elif known is not None:
            row = known.get(normalised)
        else:
            row = self._fetch(obj, normalised)
        if row is None:
            raise not_found()
        if row["IsDeleted"]:
            raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", status=404)
        return row

    @staticmethod
    def _normalised_id(obj: SObject, record_id: str, *, reading: bool) -> str:
        try:
            return to_18(record_id)
        except ValueError:
            if reading:
                raise _external_id_not_found(str(record_id)) from None
            raise SalesforceError(
                "MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {record_id}", fields=["Id"]
            ) from None

    def _rest_record(self, obj: SObject, row: dict, fields: list[str] | None) -> dict:
        if fields:
            chosen = []
            for name in fields:
                field = obj.field(name)
                if field is None:
                    raise _no_such_column(obj, name)
                chosen.append(field)
            if not any(f.name == "Id" for f in chosen):
                chosen.append(obj.field("Id"))
        else:
            chosen = list(obj.fields)
        record: dict[str, Any] = {
            "attributes": {"type": obj.name, "url": f"{SOBJECTS_PATH}/{obj.name}/{row['Id']}"}
        }
        for field in chosen:
            record[field.name] = json_value(field, row.get(field.name))
        return record

    def get(self, sobject: str, record_id: str, fields: list[str] | None = None) -> dict:
        """The record in REST shape: ``attributes`` and every field (or the listed ones and Id)."""
        obj = self._sobject(sobject)
        with self.lock:
            row = self._live_record(obj, record_id, reading=True)
        return self._rest_record(obj, row, fields)

    def _lookup_field(self, obj: SObject, name: str, *, for_upsert: bool) -> Field:
        """An external id field (upsert), or any id-lookup field (reads by custom id)."""
        field = obj.field(name)
        usable = field is not None and (field.external_id or (not for_upsert and field.auto_number))
        if not usable:
            raise _external_id_not_found(name)
        return field

    def _ids_matching(self, obj: SObject, field: Field, value: Any) -> list[str]:
        # External ids match case-insensitively, as in an org.
        rows = self.conn.execute(
            _sql(
                "SELECT Id FROM {table} WHERE {field} = ? COLLATE NOCASE AND +IsDeleted = 0 ORDER BY Id",
                table=obj.name,
                field=field.name,
            ),
            (str(value),),
        )
        return [r[0] for r in rows]

    @staticmethod
    def _multiple_records(obj: SObject, field: Field, value: Any, ids: list[str]) -> SalesforceError:
        urls = ", ".join(f"{SOBJECTS_PATH}/{obj.name}/{i}" for i in ids)
        return SalesforceError(
            "MULTIPLE_RECORDS",
            f"More than one record found for {field.name} = {value}: {urls}",
            status=300,
            fields=[field.name],
        )

    def get_by_external_id(
        self, sobject: str, ext_field: str, value: str, fields: list[str] | None = None
    ) -> dict:
        obj = self._sobject(sobject)
        field = self._lookup_field(obj, ext_field, for_upsert=False)
        with self.lock:
            ids = self._ids_matching(obj, field, value)
            if not ids:
                raise not_found()
            if len(ids) > 1:
                raise self._multiple_records(obj, field, value, ids)
            row = self._fetch(obj, ids[0])
        return self._rest_record(obj, row, fields)

    def count(self, sobject: str, include_deleted: bool = False) -> int:
        obj = self._sobject(sobject)
        template = (
            "SELECT COUNT(*) FROM {table}"
            if include_deleted
            else "SELECT COUNT(*) FROM {table} WHERE IsDeleted = 0"
        )
        with self.lock:
            return self.conn.execute(_sql(template, table=obj.name)).fetchone()[0]

    def all_ids(self, sobject: str, include_deleted: bool = False) -> list[str]:
        """Every record id of the object, in id order (Bulk API 1.0 PK chunking splits on it)."""
        obj = self._sobject(sobject)
        template = (
            "SELECT Id FROM {table} ORDER BY Id"
            if include_deleted
            else "SELECT Id FROM {table} WHERE IsDeleted = 0 ORDER BY Id"
        )
        with self.lock:
            return [row[0] for row in self.conn.execute(_sql(template, table=obj.name))]

    # -- change tracking -----------------------------------------------------------------------

    def activatable_order_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` Draft orders that have products (so they can be activated), by Id."""
        with self.lock:
            rows = self.conn.execute(
                'SELECT o.Id FROM "Order" o WHERE o.StatusCode = ? AND +o.IsDeleted = 0 AND EXISTS '
                '(SELECT 1 FROM "OrderItem" i WHERE i.OrderId = o.Id AND +i.IsDeleted = 0) ORDER BY o.Id LIMIT ?',
                (DRAFT_CATEGORY, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def _replication_window(self, start: datetime, end: datetime) -> tuple[str, str]:
        """(start, latest date covered) of an updated/ or deleted/ call, as stored dateTimes."""
        now = as_utc(self.clock())
        first, last = _to_minute(start), _to_minute(end)
        if last <= first:
            raise SalesforceError(
                "INVALID_REPLICATION_DATE",
                "startDate must chronologically precede endDate by more than one minute",
            )
        if first < now - REPLICATION_WINDOW:
            raise SalesforceError("INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago")
        covered = max(first, min(last, _to_minute(now)))
        return format_datetime(first), format_datetime(covered)

    def updated(self, sobject: str, start: datetime, end: datetime) -> dict:
        """Ids of live records whose SystemModstamp falls in [start, end), as ``updated/`` answers."""
        obj = self._sobject(sobject)
        with self.lock:
            first, covered = self._replication_window(start, end)
            rows = self.conn.execute(
                _sql(
                    "SELECT Id FROM {table} WHERE SystemModstamp >= ? AND SystemModstamp < ? AND +IsDeleted = 0 "
                    "ORDER BY SystemModstamp, Id",
                    table=obj.name,
                ),
                (first, covered),
            ).fetchall()
        if len(rows) > MAX_REPLICATION_IDS:
            raise SalesforceError("EXCEEDED_ID_LIMIT", f"ID limit exceeded: {MAX_REPLICATION_IDS}")
        return {"ids": [r[0] for r in rows], "latestDateCovered": covered}

    def deleted(self, sobject: str, start: datetime, end: datetime) -> dict:
        """Records deleted in [start, end), as ``deleted/`` answers."""
        obj = self._sobject(sobject)
        with self.lock:
            first, covered = self._replication_window(start, end)
            rows = self.conn.execute(
                "SELECT id, deleted_date FROM _sandbox_deleted_log WHERE sobject = ? AND deleted_date >= ? "
                "AND deleted_date < ? ORDER BY deleted_date, id",
                (obj.name, first, covered),
            ).fetchall()
            earliest = self.conn.execute(
                "SELECT MIN(deleted_date) FROM _sandbox_deleted_log WHERE sobject = ?", (obj.name,)
            ).fetchone()[0]
        if len(rows) > MAX_REPLICATION_IDS:
            raise SalesforceError("EXCEEDED_ID_LIMIT", f"ID limit exceeded: {MAX_REPLICATION_IDS}")
        return {
            "deletedRecords": [{"id": record_id, "deletedDate": when} for record_id, when in rows],
            "earliestDateAvailable": format_datetime(_to_minute(parse_datetime(earliest)))
            if earliest
            else covered,
            "latestDateCovered": covered,
        }

    # -- validation of writes ------------------------------------------------------------------

    def _checked_values(self, obj: SObject, values: dict, *, record_id: str | None = None) -> dict[str, Any]:
        """The request's values, keyed by field API name, in storage form (``record_id`` None = create)."""
        creating = record_id is None
        raw: dict[str, tuple[Field, Any]] = {}
        not_writable: list[str] = []
        for key, value in values.items():
            if key == "attributes":
                continue
            field = obj.field(key)
            if field is None:
                raise _no_such_column(obj, key)
            if field.type == "id":
                # An update may repeat its own id (sObject Collections records carry one).
                if creating or not _same_id(value, record_id):
                    raise SalesforceError(
                        "INVALID_FIELD", "The Id field should not be specified in the sobject data."
                    )
                continue
            if not (field.createable if creating else field.updateable):
                not_writable.append(field.name)
                continue
            raw[field.name] = (field, value)
        if not_writable:
            raise SalesforceError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(not_writable)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                fields=not_writable,
            )
        checked = {name: coerce_value(field, value) for name, (field, value) in raw.items()}
        for name, (field, _) in raw.items():
            if field.type == "reference" and checked[name] is not None:
                checked[name] = self._referenced_id(field, checked[name])
        return checked

    def _referenced_id(self, field: Field, value: str) -> str:
        """The 18-character id a lookup points at, checked to be a live record of the right object."""
        try:
            record_id = to_18(value)
        except ValueError:
            raise SalesforceError(
                "MALFORMED_ID", f"{_label(field)}: id value of incorrect type: {value}", fields=[field.name]
            ) from None
        target = self.schema.by_prefix(record_id)
        if target is None or target.name not in field.reference_to:
            raise SalesforceError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{_label(field)}: id value of incorrect type: {value}",
                fields=[field.name],
            )
        row = self.conn.execute(
            _sql("SELECT IsDeleted FROM {table} WHERE Id = ?", table=target.name), (record_id,)
        ).fetchone()
        if row is None:
            raise SalesforceError(
                "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", fields=[field.name]
            )
        if row[0]:
            raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", fields=[field.name])
        return record_id

    def _check_unique(self, obj: SObject, values: dict[str, Any], record_id: str | None) -> None:
        for name, value in values.items():
            field = obj.field(name)
            if not field.unique or value is None:
                continue
            clash = self.conn.execute(
                _sql(
                    "SELECT Id FROM {table} WHERE {field} = ? COLLATE NOCASE AND +IsDeleted = 0 AND Id IS NOT ? LIMIT 1",
                    table=obj.name,
                    field=field.name,
                ),
                (value, record_id),
            ).fetchone()
            if clash:
                raise SalesforceError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {field.name} duplicates value on record with id: {clash[0]}",
                    fields=[field.name],
                )

    def _defaults(self, obj: SObject) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for field in obj.fields:
            if field.type == "boolean":
                row[field.name] = int(_BOOLEAN_DEFAULTS.get(field.name, False))
            elif field.defaulted_on_create and field.picklist:
                default = next((p.value for p in field.picklist if p.default), None)
                if default is not None:
                    row[field.name] = default
        if obj.field("OwnerId") is not None:
            row["OwnerId"] = self.integration_user_id
        return row

    @staticmethod
    def _derive_full_name(obj: SObject, row: dict) -> None:
        """Read-only ``Name`` of people (User, Contact) follows FirstName and LastName."""
        name = obj.field("Name")
        if name is not None and not name.createable and obj.field("LastName") is not None:
            row["Name"] = (
                " ".join(part for part in (row.get("FirstName"), row.get("LastName")) if part) or None
            )

    # -- Order rules ---------------------------------------------------------------------------

    @staticmethod
    def _status_category(order: SObject, status: str) -> str:
        return order.field("Status").picklist_categories.get(status) or DRAFT_CATEGORY

    def _has_items(self, order_id: str) -> bool:
        return bool(
            self.conn.execute(
                'SELECT 1 FROM "OrderItem" WHERE OrderId = ? AND +IsDeleted = 0 LIMIT 1', (order_id,)
            ).fetchone()
        )

    def _fetch_order(self, order_id: str) -> dict:
        return self._fetch(self._sobject("Order"), order_id)

    def _on_create(self, obj: SObject, row: dict) -> None:
        """Object rules and derived fields of a record about to be inserted."""
        if obj.name == "Order":
            if self._status_category(obj, row["Status"]) != DRAFT_CATEGORY:
                raise SalesforceError("FAILED_ACTIVATION", "For a new or cloned order, choose Draft.")
            row["StatusCode"] = DRAFT_CATEGORY
            row["TotalAmount"] = 0.0
        elif obj.name == "OrderItem":
            order = self._fetch_order(row["OrderId"])
            if order["StatusCode"] == ACTIVATED_CATEGORY:
                raise _order_locked()
            entry = self._fetch(self._sobject("PricebookEntry"), row["PricebookEntryId"])
            if order["Pricebook2Id"] != entry["Pricebook2Id"]:
                raise SalesforceError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "field integrity exception: PricebookEntryId (pricebook entry is in a different pricebook than "
                    "the one assigned to the order, or order has no pricebook assigned)",
                    fields=["PricebookEntryId"],
                )
            if row.get("Product2Id") not in (None, entry["Product2Id"]):
                raise SalesforceError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    "field integrity exception: Product2Id (the product of the pricebook entry)",
                    fields=["Product2Id"],
                )
            row["Product2Id"] = entry["Product2Id"]
            row["ListPrice"] = entry["UnitPrice"]
            row["TotalPrice"] = round(row["Quantity"] * row["UnitPrice"], 2)
        elif obj.name == "PricebookEntry":
            product = self._fetch(self._sobject("Product2"), row["Product2Id"])
            row["Name"], row["ProductCode"] = product["Name"], product["ProductCode"]
        self._derive_full_name(obj, row)

    def _on_update(self, obj: SObject, before: dict, after: dict, changes: dict, stamp: str) -> None:
        """Object rules and derived fields of a record about to be updated (``after`` is changed in place)."""
        if obj.name == "Order":
            was_activated = before["StatusCode"] == ACTIVATED_CATEGORY
            if was_activated:
                for name in ORDER_FIELDS_LOCKED_WHEN_ACTIVATED:
                    if name in changes and changes[name] != before.get(name):
                        raise SalesforceError(
                            "FIELD_INTEGRITY_EXCEPTION",
                            f"Unable to modify activated order: {name} can be changed only while the order is in Draft",
                            fields=[name],
                        )
            if "Status" in changes:
                category = self._status_category(obj, after["Status"])
                if category == ACTIVATED_CATEGORY and not was_activated:
                    if not self._has_items(before["Id"]):
                        raise SalesforceError(
                            "FAILED_ACTIVATION", "an order must include at least one product"
                        )
                    if "ActivatedDate" not in changes:
                        after["ActivatedDate"] = stamp
                    if "ActivatedById" not in changes:
                        after["ActivatedById"] = self.integration_user_id
                elif category == DRAFT_CATEGORY and was_activated:
                    after["ActivatedDate"] = after["ActivatedById"] = None
                after["StatusCode"] = category
        elif obj.name == "OrderItem" and ("Quantity" in changes or "UnitPrice" in changes):
            after["TotalPrice"] = round(after["Quantity"] * after["UnitPrice"], 2)
        self._derive_full_name(obj, after)

    def _note_order_change(self, change_type: str, before: dict | None, after: dict, values: dict) -> None:
        """Remember an Order change for the listeners, told once its transaction commits."""
        self._pending_changes.append(
            RecordChange(
                change_type=change_type,
                sobject="Order",
                record_id=after["Id"],
                values=values,
                commit_stamp=after["SystemModstamp"],
                commit_user=self.integration_user_id,
                origin=CHANGE_ORIGIN.get(),
                status_before=before["Status"] if before else None,
                status_after=after["Status"],
                order_number=after.get("OrderNumber"),
                changed_fields=tuple(name for name in values if name not in _AUDIT_FIELDS),
            )
        )

    def _check_deletable(self, obj: SObject, row: dict) -> None:
        if obj.name == "Order" and row["StatusCode"] == ACTIVATED_CATEGORY:
            raise _order_locked()
        if obj.name == "OrderItem":
            order = self._fetch_order(row["OrderId"])
            if order is not None and order["StatusCode"] == ACTIVATED_CATEGORY:
                raise _order_locked()

    def _refresh_order_total(self, order_id: str) -> None:
        """Roll the items up into the order, which counts as a write to the order."""
        self.recompute_order_totals([order_id])
        self._write(self._sobject("Order"), order_id, {})

    # -- writes --------------------------------------------------------------------------------

    def _insert(self, obj: SObject, row: dict) -> None:
        columns = list(row)
        self.conn.execute(_insert_sql(obj, columns), [row[c] for c in columns])

    def _write(
        self, obj: SObject, record_id: str, changes: dict[str, Any], stamp: str | None = None, *, as_user: str | None = None
    ) -> dict[str, Any]:
        """Update columns of one record and move its modification stamps; returns the columns written."""
        stamp = stamp or self._next_stamp()
        values = {
            **changes,
            "LastModifiedDate": stamp,
            "LastModifiedById": as_user or self.integration_user_id,
            "SystemModstamp": stamp,
        }
        columns = list(values)
        self.conn.execute(
            _sql(
                "UPDATE {table} SET ({columns}) = ({params}) WHERE Id = ?",
                params=len(columns),
                table=obj.name,
                columns=columns,
            ),
            [*values.values(), record_id],
        )
        return values

    def _audit_fields_for_create(self, record_id: str, stamp: str, user_id: str) -> dict[str, Any]:
        return {
            "Id": record_id,
            "IsDeleted": 0,
            "CreatedDate": stamp,
            "CreatedById": user_id,
            "LastModifiedDate": stamp,
            "LastModifiedById": user_id,
            "SystemModstamp": stamp,
        }

    def _ensure_integration_user(self) -> str:
        """The user every write is made as (found by its username), created in a new org."""
        existing = self.conn.execute(
            'SELECT Id FROM "User" WHERE Username = ? AND IsDeleted = 0', (INTEGRATION_USERNAME,)
        ).fetchone()
        if existing:
            return existing[0]
        user = self._sobject("User")
        user_id = self.new_ids("User", 1)[0]
        row = {
            **self._defaults(user),
            "Username": INTEGRATION_USERNAME,
            "FirstName": "Integration",
            "LastName": "User",
            "Email": INTEGRATION_USERNAME,
            # The user created itself: nobody else exists yet.
            **self._audit_fields_for_create(user_id, self._next_stamp(), user_id),
        }
        self._derive_full_name(user, row)
        self._insert(user, row)
        return user_id

    def create(self, sobject: str, values: dict) -> str:
        """Insert a record through the org's validation and rules; returns its new Id."""
        obj = self._sobject(sobject)
        with self.transaction():
            checked = self._checked_values(obj, values)
            # A null on create leaves the field to its default.
            row = {**self._defaults(obj), **{k: v for k, v in checked.items() if v is not None}}
            missing = [f.name for f in obj.fields if f.required and row.get(f.name) is None]
            if missing:
                raise _required_missing(missing)
            self._on_create(obj, row)
            self._check_unique(obj, row, None)
            record_id = self.new_ids(obj.name, 1)[0]
            for field in obj.fields:
                if field.auto_number:
                    row[field.name] = self.next_auto_numbers(obj.name, field.name, 1)[0]
            row.update(self._audit_fields_for_create(record_id, self._next_stamp(), self.integration_user_id))
            self._insert(obj, row)
            if obj.name == "OrderItem":
                self._refresh_order_total(row["OrderId"])
            elif obj.name == "Order":
                self._note_order_change(CREATE, None, row, {k: v for k, v in row.items() if v is not None})
        return record_id

    def update(self, sobject: str, record_id: str, values: dict, *, as_user: str | None = None) -> None:
        """Change fields of a live record through the org's validation and rules; ``as_user``: the
        user making the change (LastModifiedById), another than the integration user (an edit in the UI)."""
        obj = self._sobject(sobject)
        with self.transaction():
            self._update_record(obj, self._live_record(obj, record_id, reading=False), values, as_user=as_user)

    def update_each(self, sobject: str, updates: Sequence[tuple[str, dict]]) -> list[SalesforceError | None]:
        """Apply ``(record_id, values)`` updates in order, each on its own exactly as :meth:`update`
        would (a failed one writes nothing and the rest go on); returns None or the error per update.

        For many updates at once (Bulk ingest, sObject Collections): the target records are read
        500 at a time rather than one by one, and all of it is one transaction."""
        obj = self._sobject(sobject)
        outcomes: list[SalesforceError | None] = []
        with self.transaction():
            for chunk in _chunks(updates):
                known = self._fetch_many(obj, (record_id for record_id, _ in chunk))
                for record_id, values in chunk:
                    try:
                        before = self._live_record(obj, record_id, reading=False, known=known)
                        # A later update of the same record in this chunk starts from this one's result.
                        known[before["Id"]] = self._update_record(obj, before, values)
                    except SalesforceError as exc:
                        outcomes.append(exc)
                    else:
                        outcomes.append(None)
        return outcomes

    def _update_record(self, obj: SObject, before: dict, values: dict, *, as_user: str | None = None) -> dict:
        """Check and write one update of the live record ``before``; returns the record as written.
        Every check runs before the first write, so an update that fails has written nothing
        (which lets :meth:`update_each` go on without a savepoint per record)."""
        changes = self._checked_values(obj, values, record_id=before["Id"])
        missing = [name for name, value in changes.items() if value is None and not obj.field(name).nillable]
        if missing:
            raise _required_missing(missing)
        after = {**before, **changes}
        stamp = self._next_stamp()
        self._on_update(obj, before, after, changes, stamp)
        self._check_unique(obj, {name: after[name] for name in changes}, before["Id"])
        # -- writes from here on
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        after.update(self._write(obj, before["Id"], changed, stamp, as_user=as_user))
        if obj.name == "OrderItem":
            self._refresh_order_total(before["OrderId"])
        elif obj.name == "Order" and changed:
            self._note_order_change(UPDATE, before, after, {k: after[k] for k in changed} | {"LastModifiedDate": stamp})
        return after

    def upsert(self, sobject: str, ext_field: str, ext_value: str, values: dict) -> tuple[str, bool]:
        """Update the record whose external id is ``ext_value``, or create it; returns (Id, created)."""
        obj = self._sobject(sobject)
        field = self._lookup_field(obj, ext_field, for_upsert=True)
        other_values = {k: v for k, v in values.items() if k.lower() != field.name.lower()}
        with self.transaction():
            ids = self._ids_matching(obj, field, ext_value)
            if len(ids) > 1:
                raise self._multiple_records(obj, field, ext_value, ids)
            if ids:
                self.update(obj.name, ids[0], other_values)
                return ids[0], False
            return self.create(obj.name, {**other_values, field.name: ext_value}), True

    def delete(self, sobject: str, record_id: str) -> None:
        """Move a record (and its cascade-deleted children) to the recycle bin: IsDeleted = 1."""
        obj = self._sobject(sobject)
        with self.transaction():
            row = self._live_record(obj, record_id, reading=False)
            self._delete_record(obj, row, cascading=False)

    def _delete_record(self, obj: SObject, row: dict, *, cascading: bool) -> None:
        self._check_deletable(obj, row)
        for relationship in obj.child_relationships:
            child = self.schema.get(relationship.child_object)
            if child is None or child.field(relationship.field) is None:
                continue
            children = self.conn.execute(
                _sql(
                    "SELECT Id FROM {table} WHERE {field} = ? AND +IsDeleted = 0",
                    table=child.name,
                    field=relationship.field,
                ),
                (row["Id"],),
            ).fetchall()
            for (child_id,) in children:
                if relationship.cascade_delete:
                    self._delete_record(child, self._fetch(child, child_id), cascading=True)
                else:
                    self._write(
                        child, child_id, {relationship.field: None}
                    )  # a lookup to a deleted record is cleared
        stamp = self._next_stamp()
        self._write(obj, row["Id"], {"IsDeleted": 1}, stamp)
        if obj.name == "Order":
            self._note_order_change(DELETE, row, {**row, "SystemModstamp": stamp}, {})
        self.conn.execute(
            "INSERT INTO _sandbox_deleted_log (sobject, id, deleted_date) VALUES (?, ?, ?)",
            (obj.name, row["Id"], stamp),
        )
        # An order deleted with its items keeps its amount, as in the recycle bin.
        if obj.name == "OrderItem" and not cascading:
            self._refresh_order_total(row["OrderId"])

    def bulk_insert(self, sobject: str, rows: list[dict]) -> None:
        """Insert complete rows as given, without rules: the caller supplies Ids (from :meth:`new_ids`),
        audit fields and derived fields, in storage form."""
        obj = self._sobject(sobject)
        if not rows:
            return
        columns = list(dict.fromkeys(chain.from_iterable(rows)))
        unknown = next((c for c in columns if obj.field(c) is None or obj.field(c).name != c), None)
        if unknown is not None:
            raise _no_such_column(obj, unknown)
        with self.transaction():
            self.conn.executemany(
                _insert_sql(obj, columns), (tuple(row.get(c) for c in columns) for row in rows)
            )

    def recompute_order_totals(self, order_ids: Iterable[str] | None = None) -> None:
        """TotalAmount = the sum of TotalPrice over the order's live items (all orders, or the listed ones)."""
        template = (
            'UPDATE "Order" SET TotalAmount = (SELECT ROUND(COALESCE(SUM(i.TotalPrice), 0), 2) FROM "OrderItem" i '
            'WHERE i.OrderId = "Order".Id AND +i.IsDeleted = 0)'
        )
        with self.transaction():
            if order_ids is None:
                self.conn.execute(template)
                return
            for chunk in _chunks(list(order_ids)):
                self.conn.execute(_sql(template + " WHERE Id IN ({params})", params=len(chunk)), chunk)

    def analyze(self) -> None:
        """Refresh the query planner's statistics: worth it after a large :meth:`bulk_insert`."""
        with self.lock:
            self.conn.execute("ANALYZE")

    def reset(self) -> None:
        """Empty every table, as a fresh org with only its integration user."""
        with self.transaction():
            for obj in self.schema.objects.values():
                self.conn.execute(_sql("DELETE FROM {table}", table=obj.name))
            self.conn.execute("DELETE FROM _sandbox_deleted_log")
            # Modstamps keep rising across a reset: a consumer's watermark stays meaningful.
            self.conn.execute("DELETE FROM _sandbox_sequences WHERE name != ?", (_MODSTAMP_SEQUENCE,))
            self._claimed = {k: v for k, v in self._claimed.items() if k == _MODSTAMP_SEQUENCE}
            self._unsaved &= {_MODSTAMP_SEQUENCE}
            self.integration_user_id = self._ensure_integration_user()
            self._sync_order_statuses()

    def _sync_order_statuses(self) -> None:
        """OrderStatus rows: one per value of the Order Status picklist, with its category."""
        statuses, order = self.schema.get("OrderStatus"), self.schema.get("Order")
        if statuses is None or order is None:
            return
        self.conn.execute(_sql("DELETE FROM {table}", table=statuses.name))
        values = order.field("Status").picklist
        for position, (status_id, value) in enumerate(zip(self.new_ids("OrderStatus", len(values)), values, strict=True)):
            row = {
                **self._defaults(statuses),
                "ApiName": value.value,
                "MasterLabel": value.value,
                "StatusCode": value.category,
                "SortOrder": position + 1,
                "IsDefault": value.default,
                **self._audit_fields_for_create(status_id, self._next_stamp(), self.integration_user_id),
            }
            self._insert(statuses, row)


__all__ = [
    "ACTIVATED_CATEGORY",
    "AUTO_NUMBER_START",
    "DRAFT_CATEGORY",
    "INTEGRATION_USERNAME",
    "SOBJECTS_PATH",
    "Store",
    "as_utc",
    "coerce_value",
    "format_datetime",
    "json_value",
    "parse_datetime",
]
