"""The import's behaviour: the JSON Airflow Variable ``salesforce_orders_config``.

Every key has a default that works against the sandbox org, so an unset Variable is a
valid configuration. Values are checked strictly (``"5"`` is not a number, ``1`` is not
``true``) and every problem is reported at once, each with the path of its key.
Names that end up in SOQL are validated as Salesforce API names and names that end up
in SQL as identifiers, so the configuration cannot inject either.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from salesforce_orders.api_names import is_api_name

VARIABLE_NAME = "salesforce_orders_config"

# The org's card fields on Order: never read, X-ed out after import.
DEFAULT_CARD_FIELDS = (
    "Credit_Card_Number__c",
    "Credit_Card_CVV__c",
    "Credit_Card_Expiration_Month__c",
    "Credit_Card_Expiration_Year__c",
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # fits PostgreSQL's 63-byte names
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")  # what Airflow allows in a connection id
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # (and the line and paragraph separators)
_HOST_AND_PORT = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")
# The assigned id is the prefix plus the 18-character Account id and must fit the 40-character id field.
_MAX_ASSIGNED_PREFIX = 22

_PROBLEMS = "config_problems"  # error type carrying (path suffix, message) pairs


class ConfigError(ValueError):
    """The configuration is unusable; the message names every bad key with its path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(_line(path, message) for path, message in self.problems))


def _line(path: str, message: str) -> str:
    return f"{VARIABLE_NAME}: {path}: {message}" if path else f"{VARIABLE_NAME}: {message}"


def _problems(*problems: tuple[str, str]) -> PydanticCustomError:
    """A validation error for several keys below the one being validated.

    Each problem is (path suffix, message), the suffix appended to the validated key's
    path as it is (``".value"``, ``"['Account.Name']"``).
    """
    summary = "; ".join(f"{suffix}: {message}" for suffix, message in problems)
    return PydanticCustomError(_PROBLEMS, summary, {"problems": list(problems)})


def _api_name(value: str) -> str:
    if not is_api_name(value):
        raise ValueError("not a valid Salesforce API name (letters, digits and _, starting with a letter)")
    return value


def _api_path(value: str) -> str:
    if not is_api_name(value, allow_path=True):
        raise ValueError("not a valid Salesforce API name or relationship path such as Account.Type")
    return value


def _identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            "not a valid identifier (letters, digits and _, not starting with a digit, at most 63 characters)"
        )
    return value


def _conn_id(value: str) -> str:
    if not _CONN_ID.fullmatch(value):
        raise ValueError("not a valid Airflow connection id (letters, digits, '_', '-' and '.')")
    return value


def _plain_text(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _host_and_port(value: str) -> str:
    if not _HOST_AND_PORT.fullmatch(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise ValueError("must be host:port (api.pubsub.salesforce.com:7443)")
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int)  # bool is an int


def _scalar(value: Any) -> Any:
    if not _is_scalar(value):
        raise ValueError("must be a string, a number or true/false")
    return value


Flag = Annotated[bool, Strict()]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]
ApiName = Annotated[str, Strict(), AfterValidator(_api_name)]
ApiPath = Annotated[str, Strict(), AfterValidator(_api_path)]
MetadataKey = Annotated[str, Strict(), AfterValidator(_identifier)]
ConnId = Annotated[str, Strict(), AfterValidator(_conn_id)]
Destination = Literal["work_order", "request"]
Operator = Literal["equals", "in", "contains", "starts_with", "is_null", "not_null"]


def _int(low: int, high: int) -> Any:
    return Annotated[int, Strict(), Field(ge=low, le=high)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoutingRule(_Section):
    """Send orders whose ``field`` matches to ``destination``."""

    field: ApiPath
    operator: Operator
    value: Any = Field(default=None, validate_default=True)
    destination: Destination

    @field_validator("value")
    @classmethod
    def _value_fits_operator(cls, value: Any, info: ValidationInfo) -> Any:
        operator = info.data.get("operator")
        if operator is None:  # the operator itself is wrong: reported on its own
            return value
        if operator in ("is_null", "not_null"):
            if value is not None:
                raise ValueError(f"operator {operator!r} takes no value")
            return None
        if operator == "in":
            if not isinstance(value, list | tuple) or not value:
                raise ValueError("operator 'in' needs a non-empty list of values")
            if not all(_is_scalar(member) for member in value):
                raise ValueError("operator 'in' needs strings, numbers or true/false")
            return tuple(value)
        if operator in ("contains", "starts_with"):
            if not isinstance(value, str) or not value:
                raise ValueError(f"operator {operator!r} needs a non-empty string")
            return value
        if not _is_scalar(value):
            raise ValueError(
                "operator 'equals' needs a string, a number or true/false (use is_null for null)"
            )
        return value


class RoutingConfig(_Section):
    """First matching rule wins; orders no rule matches go to ``default_destination``."""

    rules: tuple[RoutingRule, ...] = ()
    default_destination: Destination = "request"


class WriteBackConfig(_Section):
    """Which updates are written back to Salesforce after an order is loaded."""

    mark_imported: Flag = True
    set_customer_id: Flag = True
    x_out_card_fields: Flag = True
    # also for orders not imported (quarantined, skipped as zero-total) or whose write-back was
    # cancelled (set back to Draft), in a write-back of their own
    x_out_card_fields_not_imported: Flag = True


ShipmentAttribute = Literal["carrier", "service", "tracking_number", "tracking_url", "shipped_date"]


class ShipmentObjectConfig(_Section):
    """Target B: one record of ``object`` per shipment, upserted by ``external_id_field`` (the shipment key)."""

    object: ApiName = "Shipment"
    order_field: ApiName = "OrderId"
    external_id_field: ApiName = "Shipment_Key__c"
    fields: dict[Literal["carrier", "service", "tracking_number", "tracking_url", "shipped_date", "ship_to_name"], ApiName] = Field(
        default_factory=lambda: {
            "carrier": "Provider",
            "tracking_number": "TrackingNumber",
            "tracking_url": "TrackingUrl",
            "shipped_date": "Shipped_Date__c",
            "ship_to_name": "ShipToName",
        }
    )


class ShipmentsConfig(_Section):
    """Shipment tracking back to Salesforce (off by default): see docs/configuration.md, "Shipments"."""

    enabled: Flag = False
    order_fields: dict[ShipmentAttribute, ApiName] = Field(
        default_factory=lambda: {"tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"}
    )
    order_item_field: ApiName | None = "Shipment_Details__c"
    shipment_object: ShipmentObjectConfig | None = None


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("not an e-mail address")
    return value


def _at_least_one(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise ValueError("needs at least one address")
    return values


EmailAddress = Annotated[str, Strict(), AfterValidator(_email)]


class EmailAlerts(_Section):
    """Alerts by e-mail, sent with the SMTP provider's notifier through an SMTP connection."""

    to: Annotated[tuple[EmailAddress, ...], AfterValidator(_at_least_one)]
    smtp_conn_id: ConnId = "smtp_default"
    from_email: EmailAddress | None = None  # None: the connection's from_email


class SlackAlerts(_Section):
    """Alerts to a Slack channel, sent with the Slack provider's incoming-webhook notifier."""

    slack_webhook_conn_id: ConnId = "slack_default"


class NotificationsConfig(_Section):
    """Where failure and no-success alerts go. Nothing is sent until a channel is set."""

    email: EmailAlerts | None = None
    slack: SlackAlerts | None = None
    no_success_after_minutes: _int(15, 10_080) = 120  # the freshness check alerts past this

    @property
    def enabled(self) -> bool:
        return self.email is not None or self.slack is not None


_TOPIC = r"/(data|event)/[A-Za-z][A-Za-z0-9_]*"


def _topic(value: str) -> str:
    if not re.fullmatch(_TOPIC, value):
        raise ValueError("not a Pub/Sub topic (/data/<Object>ChangeEvent or /event/<Name>)")
    return value


def _client_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", value):
        raise ValueError("letters, digits, '_', '.', '-' only (at most 40)")
    return value


class EventsConfig(_Section):
    """Event-driven import: Salesforce's change events start a run for the changed orders."""

    enabled: Flag = False
    topic: Annotated[str, Strict(), AfterValidator(_topic)] = "/data/OrderChangeEvent"
    # Events of this many seconds are gathered into one run (a burst of activations, one import).
    window_seconds: Annotated[float, Strict(), Field(ge=0.1, le=300)] = 2.0
    # The import's own write-back sends Sforce-Call-Options: client=<this>; its change events are ignored.
    echo_client: Annotated[str, Strict(), AfterValidator(_client_name)] = "salesforce-orders-import"
    # Where the Pub/Sub API is: None takes the Salesforce connection's extra pubsub_endpoint, else Salesforce's own.
    pubsub_endpoint: Annotated[str, Strict(), Field(max_length=255), AfterValidator(_host_and_port)] | None = None


def _check_mapping(mapping: dict[str, str]) -> dict[str, str]:
    seen: dict[str, str] = {}
    duplicates = []
    for sf_field, key in mapping.items():
        if key in seen:
            duplicates.append(
                (_segment(sf_field), f"metadata key {key!r} is already mapped from {seen[key]!r}")
            )
        seen[key] = sf_field
    if duplicates:
        raise _problems(*duplicates)
    return mapping


FieldMapping = Annotated[dict[ApiPath, MetadataKey], AfterValidator(_check_mapping)]


class ImportConfig(_Section):
    """The whole import configuration (see docs/configuration.md for every key)."""

    enabled: Flag = True
    lookback_days: _int(1, 3650) = 730
    overlap_minutes: _int(0, 1440) = 10

    order_object: ApiName = "Order"
    order_item_object: ApiName = "OrderItem"
    order_items_relationship: ApiName = "OrderItems"
    filter_field: ApiPath | None = None
    filter_value: Any = Field(default=None, validate_default=True)

    order_prefix: Annotated[str, Strict(), Field(max_length=40), AfterValidator(_plain_text)] = ""
    imported_status: Annotated[
        str, Strict(), Field(max_length=40), AfterValidator(_non_blank), AfterValidator(_plain_text)
    ] = "Imported"
    customer_id_field: ApiName = "Customer_ID__c"
    assigned_customer_id_prefix: Annotated[
        str, Strict(), Field(max_length=_MAX_ASSIGNED_PREFIX), AfterValidator(_plain_text)
    ] = "SF-"
    card_fields: tuple[ApiName, ...] = DEFAULT_CARD_FIELDS
    service_number_field: ApiName = "Service_Number__c"

    routing: RoutingConfig = RoutingConfig()
    order_field_mappings: FieldMapping = Field(default_factory=dict)
    item_field_mappings: FieldMapping = Field(default_factory=dict)
    zero_total_policy: Literal["import", "skip"] = "import"
    history_mode: Flag = False
    import_notes: Flag = True
    write_back: WriteBackConfig = WriteBackConfig()
    shipments: ShipmentsConfig = ShipmentsConfig()

    max_invalid_share: Share = 0.25
    # Below this many orders in a run the share is not applied (1 invalid of 1 is 100 %): invalid orders are quarantined.
    invalid_share_min_orders: _int(0, 1_000_000) = 20
    writeback_max_attempts: _int(1, 50) = 5
    retention_days: _int(1, 3650) = 3

    salesforce_conn_id: ConnId = "salesforce_default"
    warehouse_conn_id: ConnId = "orders_warehouse"
    warehouse_schema: MetadataKey | None = None

    extract_page_size: _int(200, 2000) = 2000
    chunk_size: _int(100, 50_000) = 2000
    # The transform of a run of many orders is split into this many ranges of order ids, transformed
    # side by side (one mapped task each), each of at least transform_partition_min_orders orders.
    transform_partitions: _int(1, 64) = 2
    transform_partition_min_orders: _int(1, 10_000_000) = 5000
    bulk_threshold: _int(0, 1_000_000_000) = 50_000
    bulk_writeback_threshold: _int(0, 1_000_000_000) = 2000
    api_budget_share: Share = 0.5

    notifications: NotificationsConfig = NotificationsConfig()
    events: EventsConfig = EventsConfig()

    @field_validator("filter_value")
    @classmethod
    def _filter_value_with_field(cls, value: Any, info: ValidationInfo) -> Any:
        if "filter_field" not in info.data:  # filter_field itself is wrong: reported on its own
            return value
        if info.data["filter_field"] is None:
            if value is not None:
                raise ValueError("set filter_field too, or remove filter_value")
            return None
        if value is None:
            raise ValueError("required when filter_field is set")
        return _scalar(value)

    @model_validator(mode="after")
    def _card_fields_never_read(self) -> ImportConfig:
        """A card field may not be selected through a mapping, a rule, the filter, the service number
        or the customer id (read from the Account, its parent and every ancestor)."""
        card = self.never_selected_fields()
        named = [
            *((f"routing.rules[{i}].field", rule.field) for i, rule in enumerate(self.routing.rules)),
            *(("order_field_mappings" + _segment(name), name) for name in self.order_field_mappings),
            *(("item_field_mappings" + _segment(name), name) for name in self.item_field_mappings),
            ("filter_field", self.filter_field or ""),
            ("service_number_field", self.service_number_field),
            ("customer_id_field", self.customer_id_field),
        ]
        problems = [
            (path, f"{name!r} names a card field, and card fields are never read")
            for path, name in named
            if name.rsplit(".", 1)[-1].lower() in card
        ]
        if problems:
            raise _problems(*problems)
        return self

    @property
    def card_fields_to_x_out_when_not_imported(self) -> tuple[str, ...]:
        """The card fields to X out on orders set aside (none when the config says not to)."""
        return self.card_fields if self.write_back.x_out_card_fields_not_imported else ()

    def never_selected_fields(self) -> frozenset[str]:
        """Lower-cased names of the card fields: no query ever selects them."""
        return frozenset(name.lower() for name in (*DEFAULT_CARD_FIELDS, *self.card_fields))

    def query_names(self) -> list[tuple[str, str]]:
        """(key path, Salesforce name) of every name from this configuration that reaches a query."""
        return [
            ("order_object", self.order_object),
            ("order_item_object", self.order_item_object),
            ("order_items_relationship", self.order_items_relationship),
            *((("filter_field", self.filter_field),) if self.filter_field else ()),
            ("customer_id_field", self.customer_id_field),
            ("service_number_field", self.service_number_field),
            *((f"routing.rules[{i}].field", rule.field) for i, rule in enumerate(self.routing.rules)),
            *(("order_field_mappings" + _segment(name), name) for name in self.order_field_mappings),
            *(("item_field_mappings" + _segment(name), name) for name in self.item_field_mappings),
        ]


# A complete configuration with every key, used by docs/configuration.md.
EXAMPLE: dict[str, Any] = {
    "enabled": True,
    "lookback_days": 730,
    "overlap_minutes": 10,
    "order_object": "Order",
    "order_item_object": "OrderItem",
    "order_items_relationship": "OrderItems",
    "filter_field": "Type",
    "filter_value": "New Service",
    "order_prefix": "SF-",
    "imported_status": "Imported",
    "customer_id_field": "Customer_ID__c",
    "assigned_customer_id_prefix": "SF-",
    "card_fields": list(DEFAULT_CARD_FIELDS),
    "service_number_field": "Service_Number__c",
    "routing": {
        "rules": [
            {
                "field": "Type",
                "operator": "in",
                "value": ["New Service", "Add-On"],
                "destination": "work_order",
            },
            {"field": "Account.Type", "operator": "equals", "value": "Partner", "destination": "request"},
        ],
        "default_destination": "request",
    },
    "order_field_mappings": {"PoNumber": "po_number", "Account.AccountNumber": "account_number"},
    "item_field_mappings": {"Product2.Family": "product_family"},
    "zero_total_policy": "import",
    "history_mode": False,
    "import_notes": True,
    "write_back": {"mark_imported": True, "set_customer_id": True, "x_out_card_fields": True, "x_out_card_fields_not_imported": True},
    "shipments": {
        "enabled": False,
        "order_fields": {"tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"},
        "order_item_field": "Shipment_Details__c",
        "shipment_object": None,
    },
    "max_invalid_share": 0.25,
    "invalid_share_min_orders": 20,
    "writeback_max_attempts": 5,
    "retention_days": 3,
    "salesforce_conn_id": "salesforce_default",
    "warehouse_conn_id": "orders_warehouse",
    "warehouse_schema": None,
    "extract_page_size": 2000,
    "chunk_size": 2000,
    "transform_partitions": 2,
    "transform_partition_min_orders": 5000,
    "bulk_threshold": 50000,
    "bulk_writeback_threshold": 2000,
    "api_budget_share": 0.5,
    "notifications": {
        "email": {"to": ["orders-oncall@example.com"], "smtp_conn_id": "smtp_default", "from_email": "airflow@example.com"},
        "slack": {"slack_webhook_conn_id": "slack_default"},
        "no_success_after_minutes": 120,
    },
    "events": {
        "enabled": True,
        "topic": "/data/OrderChangeEvent",
        "window_seconds": 2.0,
        "echo_client": "salesforce-orders-import",
        "pubsub_endpoint": "api.pubsub.salesforce.com:7443",
    },
}


def parse_config(raw: str | dict[str, Any] | None) -> ImportConfig:
    """The validated configuration from the Variable's JSON text (or its parsed object).

    ``None`` or an empty string gives the defaults. Raises :class:`ConfigError`.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ImportConfig()
    data = _load_json(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict):
        raise ConfigError([("", f"must be a JSON object, got {type(data).__name__}")])
    try:
        return ImportConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([problem for error in exc.errors() for problem in _describe(error)]) from None


def load_config() -> ImportConfig:
    """Read and validate the Variable; call it inside a task, never at DAG parse time."""
    # Imported here so that importing this module never touches Airflow's Variable store.
    from airflow.sdk import Variable

    return parse_config(Variable.get(VARIABLE_NAME, default=None))


def _load_json(text: str) -> Any:
    def reject_constant(name: str) -> None:
        raise ConfigError([("", f"not valid JSON: {name} is not a number")])

    # JSON readers keep the last of a repeated key, silently: which of two values someone meant
    # is a guess, so a repeated key is refused. Each object's repeats are noted by its id here.
    repeated: dict[int, dict[str, int]] = {}

    def build_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            counts = Counter(key for key, _ in pairs)
            repeated[id(obj)] = {key: counts[key] for key in obj if counts[key] > 1}
        return obj

    try:
        data = json.loads(text, parse_constant=reject_constant, object_pairs_hook=build_object)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [("", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")]
        ) from None
    except ConfigError:
        raise
    except ValueError as exc:  # a number of thousands of digits (Python's limit on int texts)
        raise ConfigError([("", f"not valid JSON for this config: {str(exc).split(';')[0]}")]) from None
    except RecursionError:
        raise ConfigError([("", "not valid JSON for this config: nested too deeply")]) from None
    if repeated:
        raise ConfigError(list(_repeated_keys(data, repeated)))
    return data


def _repeated_keys(value: Any, repeated: dict[int, dict[str, int]], path: str = "") -> Iterator[tuple[str, str]]:
    """(path, message) for every key given more than once in an object, at any depth."""
    if isinstance(value, dict):
        for key, times in repeated.get(id(value), {}).items():
            yield path + _segment(key, first=not path), f"duplicate key (given {times} times): keep one"
        for key, child in value.items():
            yield from _repeated_keys(child, repeated, path + _segment(key, first=not path))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _repeated_keys(child, repeated, f"{path}[{index}]")


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "literal_error": "must be {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "string_too_long": "must be at most {max_length} characters",
}
_WITHOUT_INPUT = {"extra_forbidden", "missing"}


def _describe(error: ErrorDetails) -> list[tuple[str, str]]:
    """(path, message) pairs for one pydantic error."""
    path = _path(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == _PROBLEMS:
        return [(path + suffix, message) for suffix, message in ctx["problems"]]
    if error["type"] == "value_error":
        message = str(ctx["error"])
    else:
        template = _MESSAGES.get(error["type"])
        # Bounds of number keys read "at most 1", not "at most 1.0".
        shown_ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in ctx.items()}
        message = template.format(**shown_ctx) if template else error["msg"]
    if error["type"] not in _WITHOUT_INPUT and error["input"] is not None:
        message += f" (got {_shown(error['input'])})"
    return [(path, message)]


def _path(loc: tuple[int | str, ...]) -> str:
    """``routing.rules[0].destination``; keys that are not plain names in ``['...']``."""
    # "[key]" is pydantic's marker for "the key itself was wrong": the key is already named.
    return "".join(_segment(part, first=not i) for i, part in enumerate(p for p in loc if p != "[key]"))


def _segment(part: int | str, *, first: bool = False) -> str:
    """One step of a key path: ``[0]``, ``.name`` (``name`` first) or ``['Account.Name']``."""
    if isinstance(part, int):
        return f"[{part}]"
    if _IDENTIFIER.fullmatch(part):
        return part if first else f".{part}"
    return f"[{part!r}]"


def _shown(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "DEFAULT_CARD_FIELDS",
    "EXAMPLE",
    "VARIABLE_NAME",
    "ConfigError",
    "EmailAlerts",
    "ImportConfig",
    "NotificationsConfig",
    "RoutingConfig",
    "RoutingRule",
    "SlackAlerts",
    "WriteBackConfig",
    "load_config",
    "parse_config",
]
