"""The sandbox org's metadata: objects, fields and relationships.

This is the single source of truth for the sandbox. It drives:
- the SQLite tables (one table per sObject, one column per field, same names);
- ``describe`` answers;
- validation of writes (types, lengths, required fields, restricted picklists);
- the SOQL translator (field names, relationship paths, child relationships).

Storage conventions (shared by the store, the query engine and the generator):
- table name = object API name, column name = field API name; identifiers are always
  double-quoted in SQL (``Order`` is an SQL keyword);
- ``Id`` is an 18-character Salesforce id, TEXT PRIMARY KEY;
- every object has ``IsDeleted`` (INTEGER 0/1), ``CreatedDate``, ``LastModifiedDate``
  and ``SystemModstamp``;
- boolean -> INTEGER 0/1; date -> TEXT ``YYYY-MM-DD``; datetime -> TEXT
  ``YYYY-MM-DDThh:mm:ss.000+0000`` in UTC (sorts lexicographically);
  double/currency/percent -> REAL; int -> INTEGER; everything else -> TEXT;
- multi-select picklists are stored as ``a;b;c``;
- derived fields (``Order.StatusCode``, ``Order.TotalAmount``, ``OrderItem.TotalPrice``,
  auto-numbers) are stored physically and maintained by the store on every write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

# Custom fields the importer relies on (names as in a real org's API).
CUSTOMER_ID_FIELD = "Customer_ID__c"
SERVICE_NUMBER_FIELD = "Service_Number__c"
CARD_NUMBER_FIELD = "Credit_Card_Number__c"
CARD_CVV_FIELD = "Credit_Card_CVV__c"
CARD_EXP_MONTH_FIELD = "Credit_Card_Expiration_Month__c"
CARD_EXP_YEAR_FIELD = "Credit_Card_Expiration_Year__c"
CARD_FIELDS = (CARD_NUMBER_FIELD, CARD_CVV_FIELD, CARD_EXP_MONTH_FIELD, CARD_EXP_YEAR_FIELD)
# Shipment tracking (the importer's shipments write-back): fields on Order and OrderItem, and
# Salesforce Order Management's Shipment object with an external id for the shipment key.
TRACKING_NUMBER_FIELD = "Tracking_Number__c"
CARRIER_FIELD = "Carrier__c"
SHIPPED_DATE_FIELD = "Shipped_Date__c"
SHIPMENT_DETAILS_FIELD = "Shipment_Details__c"
SHIPMENT_KEY_FIELD = "Shipment_Key__c"

CURRENCY_CODES = ("USD", "EUR", "GBP", "CAD")  # the org's currencies; the first is the corporate one

DRAFT_STATUS = "Draft"
ACTIVATED_STATUS = "Activated"
IMPORTED_STATUS = "Imported"


@dataclass(frozen=True)
class PicklistValue:
    value: str
    category: str | None = None  # Order Status: "Draft" or "Activated" (drives StatusCode)
    default: bool = False
    active: bool = True

    def describe(self) -> dict:
        return {
            "value": self.value,
            "label": self.value,
            "active": self.active,
            "defaultValue": self.default,
            "validFor": None,
        }


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # id string textarea picklist multipicklist reference boolean int double currency percent date datetime email phone url
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    picklist: tuple[PicklistValue, ...] = ()
    restricted_picklist: bool = False
    reference_to: tuple[str, ...] = ()
    relationship_name: str | None = None
    external_id: bool = False
    unique: bool = False
    auto_number: bool = False
    calculated: bool = False
    precision: int = 0
    scale: int = 0
    label: str | None = None

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def required(self) -> bool:
        """Required on create: not nillable, createable and not defaulted."""
        return not self.nillable and self.createable and not self.defaulted_on_create

    @cached_property
    def picklist_categories(self) -> dict[str, str | None]:
        """Each picklist value's category (the first entry of a value listed twice): Order Status
        is looked up on every write of an Order."""
        categories: dict[str, str | None] = {}
        for value in self.picklist:
            categories.setdefault(value.value, value.category)
        return categories

    @cached_property
    def active_picklist_values(self) -> frozenset[str]:
        """The values a restricted picklist accepts (checked on every write of the field)."""
        return frozenset(p.value for p in self.picklist if p.active)

    @property
    def sql_type(self) -> str:
        if self.type in ("boolean", "int"):
            return "INTEGER"
        if self.type in ("double", "currency", "percent"):
            return "REAL"
        return "TEXT"

    @property
    def soap_type(self) -> str:
        return {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "int": "xsd:int",
            "double": "xsd:double",
            "currency": "xsd:double",
            "percent": "xsd:double",
            "date": "xsd:date",
            "datetime": "xsd:dateTime",
        }.get(self.type, "xsd:string")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "label": self.label or _label(self.name),
            "type": self.type,
            "soapType": self.soap_type,
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": self.precision,
            "scale": self.scale,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "custom": self.custom,
            "calculated": self.calculated,
            "autoNumber": self.auto_number,
            "externalId": self.external_id,
            "unique": self.unique,
            "idLookup": self.type == "id" or self.external_id or self.auto_number,
            "nameField": self.name == "Name",
            "filterable": self.type != "textarea" or self.length <= 255,
            "sortable": self.type not in ("textarea", "multipicklist"),
            "groupable": self.type not in ("textarea", "double", "currency", "percent", "datetime"),
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": [p.describe() for p in self.picklist],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "defaultValue": next((p.value for p in self.picklist if p.default), None),
        }


@dataclass(frozen=True)
class ChildRelationship:
    relationship_name: str  # e.g. "OrderItems"
    child_object: str  # e.g. "OrderItem"
    field: str  # the child's lookup field, e.g. "OrderId"
    cascade_delete: bool = False

    def describe(self) -> dict:
        return {
            "childSObject": self.child_object,
            "field": self.field,
            "relationshipName": self.relationship_name,
            "cascadeDelete": self.cascade_delete,
            "deprecatedAndHidden": False,
        }


@dataclass(frozen=True)
class SObject:
    name: str
    key_prefix: str
    fields: tuple[Field, ...]
    child_relationships: tuple[ChildRelationship, ...] = ()
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    label: str | None = None

    def field(self, name: str) -> Field | None:
        """Case-insensitive field lookup (SOQL and REST are case-insensitive)."""
        return self._fields_by_lower.get(name.lower())

    @cached_property
    def _fields_by_lower(self) -> dict[str, Field]:
        # Looked up for every value of every write: built once (cached_property works on a
        # frozen dataclass, as it writes the instance __dict__ directly).
        return {f.name.lower(): f for f in self.fields}

    def relationship(self, name: str) -> Field | None:
        """The reference field behind a parent relationship name (``Account`` -> ``AccountId``)."""
        for f in self.fields:
            if f.relationship_name and f.relationship_name.lower() == name.lower():
                return f
        return None

    def child_relationship(self, name: str) -> ChildRelationship | None:
        for c in self.child_relationships:
            if c.relationship_name.lower() == name.lower():
                return c
        return None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "labelPlural": (self.label or self.name) + "s",
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": True,
            "retrieveable": True,
            "searchable": True,
            "fields": [f.describe() for f in self.fields],
            "childRelationships": [c.describe() for c in self.child_relationships],
            "urls": {
                "sobject": f"/services/data/v59.0/sobjects/{self.name}",
                "describe": f"/services/data/v59.0/sobjects/{self.name}/describe",
                "rowTemplate": f"/services/data/v59.0/sobjects/{self.name}/{{ID}}",
            },
        }


@dataclass(frozen=True)
class Schema:
    objects: dict[str, SObject]

    def get(self, name: str) -> SObject | None:
        for key, obj in self.objects.items():
            if key.lower() == name.lower():
                return obj
        return None

    def by_prefix(self, record_id: str) -> SObject | None:
        for obj in self.objects.values():
            if record_id.startswith(obj.key_prefix):
                return obj
        return None


def _label(name: str) -> str:
    base = name.removesuffix("__c").removesuffix("Id").replace("_", " ")
    out = ""
    for i, ch in enumerate(base):
        if i and ch.isupper() and not base[i - 1].isupper() and base[i - 1] != " ":
            out += " "
        out += ch
    return out.strip() or name


def _audit_fields() -> tuple[Field, ...]:
    sys = {"createable": False, "updateable": False, "nillable": False, "defaulted_on_create": True}
    return (
        Field("IsDeleted", "boolean", **sys),
        Field("CreatedDate", "datetime", **sys),
        Field("CreatedById", "reference", reference_to=("User",), relationship_name="CreatedBy", **sys),
        Field("LastModifiedDate", "datetime", **sys),
        Field("LastModifiedById", "reference", reference_to=("User",), relationship_name="LastModifiedBy", **sys),
        Field("SystemModstamp", "datetime", **sys),
    )


def _id() -> Field:
    return Field("Id", "id", length=18, nillable=False, createable=False, updateable=False, defaulted_on_create=True)


def _address(prefix: str) -> tuple[Field, ...]:
    # Lengths as in the Order / Account reference.
    return (
        Field(f"{prefix}Street", "textarea", length=255),
        Field(f"{prefix}City", "string", length=40),
        Field(f"{prefix}State", "string", length=80),
        Field(f"{prefix}PostalCode", "string", length=20),
        Field(f"{prefix}Country", "string", length=80),
        Field(f"{prefix}Latitude", "double", precision=18, scale=15),
        Field(f"{prefix}Longitude", "double", precision=18, scale=15),
    )


def _ref(name: str, target: str, relationship: str, **kw) -> Field:
    return Field(name, "reference", length=18, reference_to=(target,), relationship_name=relationship, **kw)


def _rate_fields() -> tuple[Field, ...]:
    """A currency and its rate: units of it per unit of the corporate currency."""
    return (
        Field("IsoCode", "picklist", length=3, nillable=False, updateable=False,
              picklist=tuple(PicklistValue(v) for v in CURRENCY_CODES)),
        Field("ConversionRate", "double", nillable=False, precision=18, scale=6),
    )


def _owner() -> Field:
    return _ref("OwnerId", "User", "Owner", nillable=False, defaulted_on_create=True)


ORDER_STATUSES = (
    PicklistValue(DRAFT_STATUS, category="Draft", default=True),
    PicklistValue(ACTIVATED_STATUS, category="Activated"),
    PicklistValue(IMPORTED_STATUS, category="Activated"),
)


def build_schema(with_imported_status: bool = True, multi_currency: bool = True) -> Schema:
    """The org's objects. ``with_imported_status=False`` serves an org whose Order Status
    picklist has no ``Imported`` value (the importer must then leave Status alone).
    ``multi_currency=False`` serves an org without multi-currency, as most orgs are: no
    ``CurrencyIsoCode`` on its records and no ``CurrencyType`` or ``DatedConversionRate`` object
    (a query naming them is refused, INVALID_FIELD / INVALID_TYPE); every amount is in the org's
    one currency, ``Organization.DefaultCurrencyIsoCode``."""
    statuses = ORDER_STATUSES if with_imported_status else ORDER_STATUSES[:2]

    user = SObject(
        "User",
        "005",
        (
            _id(),
            Field("Username", "string", length=80, nillable=False, unique=True),
            Field("Name", "string", length=121, createable=False, updateable=False),
            Field("FirstName", "string", length=40),
            Field("LastName", "string", length=80, nillable=False),
            Field("Email", "email", length=128, nillable=False),
            Field("IsActive", "boolean", nillable=False, defaulted_on_create=True),
            *_audit_fields(),
        ),
    )

    account = SObject(
        "Account",
        "001",
        (
            _id(),
            Field("Name", "string", length=255, nillable=False),
            _ref("ParentId", "Account", "Parent"),
            Field(
                "Type",
                "picklist",
                length=255,
                picklist=tuple(PicklistValue(v) for v in ("Customer - Direct", "Customer - Channel", "Partner", "Prospect", "Other")),
            ),
            *_address("Billing"),
            *_address("Shipping"),
            Field("Phone", "phone", length=40),
            Field("Website", "url", length=255),
            Field("AccountNumber", "string", length=40),
            Field("Description", "textarea", length=32000),
            Field(CUSTOMER_ID_FIELD, "string", length=40, external_id=True, unique=True, label="Customer ID"),
            _owner(),
            *_audit_fields(),
        ),
        child_relationships=(
            ChildRelationship("ChildAccounts", "Account", "ParentId"),
            ChildRelationship("Contacts", "Contact", "AccountId", cascade_delete=True),
            ChildRelationship("Orders", "Order", "AccountId", cascade_delete=True),
        ),
    )

    contact = SObject(
        "Contact",
        "003",
        (
            _id(),
            _ref("AccountId", "Account", "Account"),
            Field("FirstName", "string", length=40),
            Field("LastName", "string", length=80, nillable=False),
            Field("Name", "string", length=121, createable=False, updateable=False),
            Field("Email", "email", length=80),
            Field("Phone", "phone", length=40),
            _owner(),
            *_audit_fields(),
        ),
    )

    product = SObject(
        "Product2",
        "01t",
        (
            _id(),
            Field("Name", "string", length=255, nillable=False),
            Field("ProductCode", "string", length=255),
            Field("Description", "textarea", length=4000),
            Field("Family", "picklist", length=40, picklist=tuple(PicklistValue(v) for v in ("Hardware", "Service", "Voice", "Internet", "Other"))),
            Field("IsActive", "boolean", nillable=False, defaulted_on_create=True),
            *_audit_fields(),
        ),
        child_relationships=(ChildRelationship("PricebookEntries", "PricebookEntry", "Product2Id", cascade_delete=True),),
    )

    pricebook = SObject(
        "Pricebook2",
        "01s",
        (
            _id(),
            Field("Name", "string", length=255, nillable=False),
            Field("IsActive", "boolean", nillable=False, defaulted_on_create=True),
            Field("IsStandard", "boolean", nillable=False, createable=False, updateable=False, defaulted_on_create=True),
            Field("Description", "string", length=255),
            *_audit_fields(),
        ),
        child_relationships=(ChildRelationship("PricebookEntries", "PricebookEntry", "Pricebook2Id", cascade_delete=True),),
    )

    pricebook_entry = SObject(
        "PricebookEntry",
        "01u",
        (
            _id(),
            _ref("Pricebook2Id", "Pricebook2", "Pricebook2", nillable=False, updateable=False),
            _ref("Product2Id", "Product2", "Product2", nillable=False, updateable=False),
            Field("UnitPrice", "currency", nillable=False, precision=18, scale=2),
            Field("IsActive", "boolean", nillable=False, defaulted_on_create=True),
            Field("ProductCode", "string", length=255, createable=False, updateable=False),
            Field("Name", "string", length=255, createable=False, updateable=False),
            *_audit_fields(),
        ),
    )

    order = SObject(
        "Order",
        "801",
        (
            _id(),
            _ref("AccountId", "Account", "Account", nillable=False),
            _ref("ContractId", "Contract", "Contract"),
            _ref("OpportunityId", "Opportunity", "Opportunity"),
            _ref("Pricebook2Id", "Pricebook2", "Pricebook2"),
            Field("Name", "string", length=80),
            Field("OrderNumber", "string", length=30, nillable=False, createable=False, updateable=False, defaulted_on_create=True, auto_number=True),
            Field("Status", "picklist", length=40, nillable=False, picklist=statuses, restricted_picklist=True),
            Field(
                "StatusCode",
                "picklist",
                length=40,
                nillable=False,
                createable=False,
                updateable=False,
                defaulted_on_create=True,
                picklist=(PicklistValue("Draft"), PicklistValue("Activated")),
                label="Status Category",
            ),
            Field("EffectiveDate", "date", nillable=False, label="Order Start Date"),
            Field("EndDate", "date"),
            Field("ActivatedDate", "datetime"),
            _ref("ActivatedById", "User", "ActivatedBy"),
            Field("TotalAmount", "currency", createable=False, updateable=False, calculated=True, precision=18, scale=2, label="Order Amount"),
            *_address("Billing"),
            *_address("Shipping"),
            Field("ShippingName", "string", length=255, label="Shipping Name"),
            Field("Description", "textarea", length=32000),
            Field("PoNumber", "string", length=80, label="PO Number"),
            Field("PoDate", "date", label="PO Date"),
            Field(
                "Type",
                "picklist",
                length=255,
                picklist=tuple(PicklistValue(v) for v in ("New Service", "Change", "Add-On", "Renewal", "Disconnect")),
            ),
            Field(
                "CurrencyIsoCode",
                "picklist",
                length=3,
                nillable=False,
                defaulted_on_create=True,
                picklist=tuple(PicklistValue(v, default=v == CURRENCY_CODES[0]) for v in CURRENCY_CODES),
                restricted_picklist=True,
            ),
            Field(CARD_NUMBER_FIELD, "string", length=20, label="Credit Card Number"),
            Field(CARD_CVV_FIELD, "string", length=4, label="Credit Card CVV"),
            Field(CARD_EXP_MONTH_FIELD, "string", length=2, label="Credit Card Expiration Month"),
            Field(CARD_EXP_YEAR_FIELD, "string", length=4, label="Credit Card Expiration Year"),
            Field(TRACKING_NUMBER_FIELD, "string", length=255, label="Tracking Number"),
            Field(CARRIER_FIELD, "string", length=255, label="Carrier"),
            Field(SHIPPED_DATE_FIELD, "date", label="Shipped Date"),
            _owner(),
            *_audit_fields(),
        ),
        child_relationships=(ChildRelationship("OrderItems", "OrderItem", "OrderId", cascade_delete=True),),
    )

    order_item = SObject(
        "OrderItem",
        "802",
        (
            _id(),
            _ref("OrderId", "Order", "Order", nillable=False, updateable=False),
            _ref("PricebookEntryId", "PricebookEntry", "PricebookEntry", nillable=False, updateable=False),
            _ref("Product2Id", "Product2", "Product2", createable=True, updateable=False),
            Field("OrderItemNumber", "string", length=10, nillable=False, createable=False, updateable=False, defaulted_on_create=True, auto_number=True),
            Field("Quantity", "double", nillable=False, precision=18, scale=2),
            Field("UnitPrice", "currency", nillable=False, precision=18, scale=2),
            Field("ListPrice", "currency", createable=False, updateable=False, precision=18, scale=2),
            Field("TotalPrice", "currency", createable=False, updateable=False, calculated=True, precision=18, scale=2),
            Field("Description", "string", length=255, label="Line Description"),
            Field("ServiceDate", "date", label="Start Date"),
            Field("EndDate", "date"),
            Field(SERVICE_NUMBER_FIELD, "string", length=40, label="Service Number"),
            Field(SHIPMENT_DETAILS_FIELD, "textarea", length=1000, label="Shipment Details"),
            *_audit_fields(),
        ),
    )

    # Salesforce Order Management's Shipment (its standard fields the importer uses), with a
    # custom external id for the shipment key and the shipped date.
    shipment = SObject(
        "Shipment",
        "0OB",
        (
            _id(),
            Field("ShipmentNumber", "string", length=30, nillable=False, createable=False, updateable=False, defaulted_on_create=True, auto_number=True),
            _ref("OrderId", "Order", "Order"),
            Field("ShipToName", "string", length=255, nillable=False, label="Recipient"),
            Field("Provider", "string", length=255, label="Carrier"),
            Field("TrackingNumber", "string", length=255),
            Field("TrackingUrl", "url", length=1000, label="Tracking URL"),
            Field("Description", "textarea", length=32000),
            Field(SHIPMENT_KEY_FIELD, "string", length=255, external_id=True, unique=True, label="Shipment Key"),
            Field(SHIPPED_DATE_FIELD, "date", label="Shipped Date"),
            Field("Service__c", "string", length=255, label="Service"),
            _owner(),
            *_audit_fields(),
        ),
    )

    # Contract is only a reference target here; a minimal object keeps describe and joins honest.
    contract = SObject(
        "Contract",
        "800",
        (
            _id(),
            _ref("AccountId", "Account", "Account", nillable=False),
            Field("ContractNumber", "string", length=30, nillable=False, createable=False, updateable=False, defaulted_on_create=True, auto_number=True),
            Field("Status", "picklist", length=40, nillable=False, defaulted_on_create=True, picklist=(PicklistValue("Draft", default=True), PicklistValue("Activated"))),
            Field("StartDate", "date"),
            *_audit_fields(),
        ),
    )

    # Opportunity is only a reference target of Order.OpportunityId, like Contract.
    opportunity = SObject(
        "Opportunity",
        "006",
        (
            _id(),
            _ref("AccountId", "Account", "Account"),
            Field("Name", "string", length=120, nillable=False),
            Field("StageName", "picklist", length=255, nillable=False, picklist=tuple(PicklistValue(v) for v in ("Prospecting", "Closed Won", "Closed Lost"))),
            Field("CloseDate", "date", nillable=False),
            *_audit_fields(),
        ),
    )

    # The Order Status picklist's values with their category, as Salesforce serves them: read-only,
    # one row per Status value (the store keeps the rows in step with the schema).
    order_status = SObject(
        "OrderStatus",
        "0Fs",
        (
            _id(),
            Field("ApiName", "string", length=255, nillable=False, createable=False, updateable=False),
            Field("MasterLabel", "string", length=255, nillable=False, createable=False, updateable=False),
            Field(
                "StatusCode", "picklist", length=40, nillable=False, createable=False, updateable=False,
                picklist=(PicklistValue("Draft"), PicklistValue("Activated")),
            ),
            Field("SortOrder", "int", createable=False, updateable=False),
            Field("IsDefault", "boolean", nillable=False, createable=False, updateable=False, defaulted_on_create=True),
            *_audit_fields(),
        ),
        createable=False,
        updateable=False,
        deletable=False,
    )

    # Multi-currency: the org's currencies with their rate to the corporate currency (units of the
    # currency per corporate unit), and with advanced currency management the rates by period.
    currency_type = SObject(
        "CurrencyType",
        "02c",
        (
            _id(),
            *_rate_fields(),
            Field("DecimalPlaces", "int", nillable=False, defaulted_on_create=True),
            Field("IsActive", "boolean", nillable=False, defaulted_on_create=True),
            Field("IsCorporate", "boolean", nillable=False, defaulted_on_create=True),
            *_audit_fields(),
        ),
    )
    dated_conversion_rate = SObject(
        "DatedConversionRate",
        "04w",
        (
            _id(),
            *_rate_fields(),
            Field("StartDate", "date", nillable=False),
            Field("NextStartDate", "date", createable=False, updateable=False),
            *_audit_fields(),
        ),
    )

    # The org itself: one record, read-only (its default currency is the currency of a
    # single-currency org).
    organization = SObject(
        "Organization",
        "00D",
        (
            _id(),
            Field("Name", "string", length=80, nillable=False),
            Field(
                "DefaultCurrencyIsoCode", "picklist", length=3,
                picklist=tuple(PicklistValue(v, default=v == CURRENCY_CODES[0]) for v in CURRENCY_CODES),
                restricted_picklist=True, label="Locale Currency",
            ),
            Field("IsSandbox", "boolean", nillable=False, defaulted_on_create=True),
            *_audit_fields(),
        ),
        createable=False,
        updateable=False,
        deletable=False,
    )

    objects = [
        user, account, contact, product, pricebook, pricebook_entry, order, order_item, contract, opportunity, order_status,
        currency_type, dated_conversion_rate, shipment, organization,
    ]
    if not multi_currency:
        objects = [without_field(o, "CurrencyIsoCode") for o in objects if o not in (currency_type, dated_conversion_rate)]
    return Schema({o.name: o for o in objects})


def without_field(obj: SObject, field_name: str) -> SObject:
    """A copy of ``obj`` without one field (an org that lacks a custom field, or multi-currency)."""
    return replace(obj, fields=tuple(f for f in obj.fields if f.name != field_name))


__all__ = [
    "ACTIVATED_STATUS",
    "CARD_FIELDS",
    "CUSTOMER_ID_FIELD",
    "DRAFT_STATUS",
    "IMPORTED_STATUS",
    "SERVICE_NUMBER_FIELD",
    "ChildRelationship",
    "Field",
    "PicklistValue",
    "SObject",
    "Schema",
    "build_schema",
]
