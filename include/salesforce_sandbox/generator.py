"""A realistic sandbox org, generated deterministically from a seed.

What an org that has sold for a few years holds: account hierarchies and multi-location
customers, products in the standard price book, Draft and Activated orders spread over
the past three years (some activated more than two years ago), order products grouped by
service number, card fields, zero-total orders, names with quotes, accents, CJK and emoji,
and a share of orders with the dirty data Salesforce itself accepts.

Rows are written with :meth:`Store.bulk_insert` (no per-row rules), in chunks so memory
stays bounded, and totals are rolled up at the end. Same seed and same ``now`` give the
same rows, Ids included, when generated into a fresh store.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

from .schema import (
    ACTIVATED_STATUS,
    CARD_CVV_FIELD,
    CARD_EXP_MONTH_FIELD,
    CARD_EXP_YEAR_FIELD,
    CARD_NUMBER_FIELD,
    CURRENCY_CODES,
    CUSTOMER_ID_FIELD,
    DRAFT_STATUS,
    SERVICE_NUMBER_FIELD,
)
from .store import ACTIVATED_CATEGORY, DRAFT_CATEGORY, Store, as_utc

DEFAULT_SEED = 7
GENERATED_OBJECTS = (
    "User",
    "Pricebook2",
    "Product2",
    "PricebookEntry",
    "Account",
    "Contact",
    "Order",
    "OrderItem",
    "CurrencyType",
    "DatedConversionRate",
    "Organization",
)

DAY = 86_400
ORDER_AGE_SPAN = 1_100 * DAY  # orders reach back three years; ~18% are older than two
ORDERS_PER_ACCOUNT = 4
CHUNK_ORDERS = 2_000
SERVICE_GROUP_SHARE = 0.45  # orders whose products are grouped by service number
ZERO_TOTAL_SHARE = 0.02
CARD_SHARE = 0.8
ACCOUNT_WITHOUT_SHIPPING_SHARE = 0.2
ORDER_WITHOUT_SHIPPING_SHARE = 0.07  # even when the account has a shipping address
MULTI_LOCATION_SHARE = 0.04
ORDERS_PER_MULTI_LOCATION_ACCOUNT = 3  # at least, so each shows several shipping addresses
CHILD_ACCOUNT_SHARE = 0.1
MAX_HIERARCHY_DEPTH = 3
CUSTOMER_ID_SHARE = 0.15
# Units of each currency per corporate unit (USD); dated rates move around these by period.
CONVERSION_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "CAD": 1.36}
RATE_PERIOD = 91 * DAY  # dated conversion rates change about quarterly
RATE_PERIODS = 16  # reaching back past the oldest order
FIRST_RATE_START = "0001-01-01"  # Salesforce's first period begins at the beginning of time
LAST_RATE_END = "9999-12-31"

# (city, state, postal code, country, currency)
CITIES = (
    ("Springfield", "IL", "62701", "United States", "USD"),
    ("Austin", "TX", "78701", "United States", "USD"),
    ("Portland", "OR", "97205", "USA", "USD"),
    ("Denver", "CO", "80202", "US", "USD"),
    ("Boston", "MA", "02108", "United States", "USD"),
    ("Seattle", "WA", "98101", "United States", "USD"),
    ("Chicago", "IL", "60601", "United States", "USD"),
    ("Miami", "FL", "33131", "United States", "USD"),
    ("Phoenix", "AZ", "85004", "United States", "USD"),
    ("Raleigh", "NC", "27601", "United States", "USD"),
    ("Toronto", "ON", "M5H 2N2", "Canada", "CAD"),
    ("Vancouver", "BC", "V6B 1A1", "Canada", "CAD"),
    ("Montréal", "QC", "H2Y 1C6", "Canada", "CAD"),
    ("London", None, "EC1A 1BB", "United Kingdom", "GBP"),
    ("Manchester", None, "M1 1AE", "GB", "GBP"),
    ("Berlin", "BE", "10115", "Germany", "EUR"),
    ("München", "BY", "80331", "Germany", "EUR"),
    ("Köln", "NW", "50667", "DE", "EUR"),
    ("Dublin", None, "D02 X285", "Ireland", "EUR"),
    ("Amsterdam", None, "1012 JS", "Netherlands", "EUR"),
)
CURRENCY_BY_COUNTRY = {country: currency for _city, _state, _postal, country, currency in CITIES}
STREETS = (
    "Main Street",
    "Oak Avenue",
    "Market St",
    "Industrial Pkwy",
    "Elm Road",
    "High Street",
    "Hauptstraße",
    "Rue Saint-Paul",
    "Harbour Drive",
    "Commerce Blvd",
    "Maple Lane",
    "Station Road",
)
STREET_SECOND_LINES = ("Suite 200", "Floor 3", "Unit B", "Building 7, Dock 2")
COMPANY_WORDS = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Wonka",
    "Oceanic",
    "Monarch",
    "Aperture",
    "Massive",
    "Dunder",
    "Prestige",
    "Nakatomi",
    "Gekko",
)
COMPANY_KINDS = (
    "Industries",
    "Logistics",
    "Health",
    "Foods",
    "Telecom",
    "Consulting",
    "Energy",
    "Media",
    "Systems",
    "Holdings",
    "Partners",
    "Labs",
    "Dental",
    "Realty",
    "Bakery",
)
COMPANY_FORMS = ("Inc.", "LLC", "Ltd", "GmbH", "Corp.", "Co.", "")
# Names that break naive quoting, encoding or escaping somewhere downstream.
SPECIAL_ACCOUNT_NAMES = (
    "Café Zoë GmbH",
    "O'Brien & Sons",
    '"Quoted" Ltd',
    "Müller-Lüdenscheid AG",
    "東京テレコム株式会社",
    "Rocket 🚀 Repairs",
    "Back\\Slash Networks",
)
ACCOUNT_TYPES = ("Customer - Direct", "Customer - Channel", "Partner", "Other")
FIRST_NAMES = (
    "Alex",
    "Maria",
    "José",
    "Zoë",
    "Seán",
    "Priya",
    "Wei",
    "Fatima",
    "Lars",
    "Chloé",
    "Tom",
    "Aiko",
)
LAST_NAMES = (
    "Rivera",
    "O'Neil",
    "Müller",
    "Nguyen",
    "Smith",
    "Kowalski",
    "Johansson",
    "Okafor",
    "García",
    "Lee",
)
SALES_REPS = (("Alex", "Rivera"), ("Sam", "O'Connor"), ("Jordan", "Lee"))
# (name, product code, family, list price)
PRODUCTS = (
    ("Business Internet 100 Mbps", "INET-100", "Internet", 89.0),
    ("Business Internet 500 Mbps", "INET-500", "Internet", 199.0),
    ("Business Internet 1 Gbps", "INET-1G", "Internet", 349.0),
    ("Static IP Block /29", "IP-29", "Internet", 25.0),
    ("SD-WAN Edge", "SDWAN-EDGE", "Internet", 129.0),
    ("LTE Failover", "INET-LTE", "Internet", 59.0),
    ("Hosted Voice Seat", "VOICE-SEAT", "Voice", 24.99),
    ("SIP Trunk", "SIP-TRUNK", "Voice", 19.5),
    ("Toll-Free Number", "TFN", "Voice", 5.0),
    ("Local Phone Number", "DID", "Voice", 2.5),
    ("E911 Service", "E911", "Voice", 1.5),
    ("Fax to Email", "FAX2E", "Voice", 9.99),
    ("Desk Phone Yealink T54W", "HW-T54W", "Hardware", 189.0),
    ("Conference Phone CP960", "HW-CP960", "Hardware", 549.0),
    ("Edge Router", "HW-RTR", "Hardware", 299.0),
    ("Managed Switch 24-port", "HW-SW24", "Hardware", 410.0),
    ("Wi-Fi Access Point", "HW-AP", "Hardware", 159.0),
    ("UPS Battery Backup", "HW-UPS", "Hardware", 120.0),
    ("Security Camera", "HW-CAM", "Hardware", 210.0),
    ("Paging Adapter", "HW-PAGE", "Hardware", 95.0),
    ("Professional Installation", "SVC-INSTALL", "Service", 150.0),
    ("Site Survey", "SVC-SURVEY", "Service", 250.0),
    ("Managed Firewall", "SVC-FW", "Service", 79.0),
    ("24/7 Support Plan", "SVC-247", "Service", 49.0),
    ("Training Session", "SVC-TRAIN", "Service", 95.0),
    ("Number Porting", "SVC-PORT", "Service", 0.0),
    ("Installation Waiver Promo", "PROMO-INSTALL", "Other", 0.0),
    ("Cloud Backup 1 TB", "CLOUD-1TB", "Other", 35.0),
    ("Microsoft 365 Business", "M365-BUS", "Other", 12.5),
    ("Voicemail to Email", "VM2E", "Voice", 0.0),
)
ORDER_TYPES = ("New Service", "Change", "Add-On", "Renewal", "Disconnect")
ORDER_NAMES = (
    "New office setup",
    "Voice migration",
    "Bandwidth upgrade",
    "Branch opening",
    "Hardware refresh",
)
ORDER_DESCRIPTIONS = (
    "Customer requested installation before the end of the month.",
    "Deliver to loading dock.\nCall ahead: 555-0100",
    'Ask for "Big Mike" at reception.',
    "Port existing numbers; keep main line live during cutover.\n\nSee attached LOA.",
    "Rush order – expedite shipping",
    "Windows line ending\r\nsecond line",
)
QUANTITIES = (1, 1, 1, 1, 2, 2, 3, 4, 5, 10, 12, 25)
FREE_TEXT_COUNTRIES = ("U.S.A.", "Deutschland", "united states", "U.K.", "Etats-Unis")
DIRTY_KINDS = (
    "missing_city",
    "missing_postal_code",
    "free_text_country",
    "future_effective_date",
    "blank_street",
    "long_street",
    "street_only",
    "lowercase_state",
)


@dataclass(frozen=True)
class GeneratorOptions:
    orders: int = 500
    seed: int = DEFAULT_SEED
    now: datetime | None = None
    dirty_share: float = 0.05
    items_per_order: float = 3.0
    activated_share: float = 0.85

    def __post_init__(self) -> None:
        if self.orders < 0:
            raise ValueError("orders must be zero or more")
        if self.items_per_order < 0:
            raise ValueError("items_per_order must be zero or more")
        for name in ("dirty_share", "activated_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


def generate(
    store: Store,
    orders: int = 500,
    seed: int = DEFAULT_SEED,
    *,
    now: datetime | None = None,
    dirty_share: float = 0.05,
    items_per_order: float = 3.0,
    activated_share: float = 0.85,
) -> dict[str, int]:
    """Fill an empty org with about ``orders`` orders and everything around them; returns the
    number of records written per object. ``now`` (default: the store's clock) anchors every date."""
    options = GeneratorOptions(orders, seed, now, dirty_share, items_per_order, activated_share)
    return _OrgGenerator(store, options).run()


def generate_with(store: Store, options: GeneratorOptions) -> dict[str, int]:
    """:func:`generate` with its options as one value."""
    return generate(store, **asdict(options))


# ---------------------------------------------------------------------------------------------


Address = tuple[
    str | None, str | None, str | None, str | None, str | None
]  # street, city, state, postal, country


@dataclass(slots=True)
class _Account:
    id: str
    name: str
    owner_id: str
    billing: Address
    shipping: Address | None
    currency: str
    locations: list[Address] = field(default_factory=list)  # multi-location accounts ship to each
    next_location: int = 0


def _stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(seconds))


def _day(seconds: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def luhn_check_digit(digits: str) -> str:
    """The digit that makes ``digits`` + it pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 0:  # doubled: these are every second digit counting from the check digit
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return str(-total % 10)


def _audit(created: int, modified: int, modstamp: int, created_by: str, modified_by: str) -> dict:
    return {
        "IsDeleted": 0,
        "CreatedDate": _stamp(created),
        "CreatedById": created_by,
        "LastModifiedDate": _stamp(modified),
        "LastModifiedById": modified_by,
        "SystemModstamp": _stamp(modstamp),
    }


def _address_fields(prefix: str, address: Address | None) -> dict:
    street, city, state, postal, country = address or (None,) * 5
    return {
        f"{prefix}Street": street,
        f"{prefix}City": city,
        f"{prefix}State": state,
        f"{prefix}PostalCode": postal,
        f"{prefix}Country": country,
    }


class _OrgGenerator:
    def __init__(self, store: Store, options: GeneratorOptions):
        if store.count("Account", include_deleted=True) or store.count("Order", include_deleted=True):
            raise ValueError("generate() fills an empty org: call store.reset() first")
        self.store = store
        self.options = options
        self.rng = random.Random(options.seed)
        self.now = int(as_utc(options.now or store.clock()).timestamp())
        self.stats = dict.fromkeys(GENERATED_OBJECTS, 0)
        self.reps: list[str] = []
        self.entries: list[tuple[str, str, float]] = []  # (pricebook entry id, product id, list price)
        self.free_entries: list[tuple[str, str, float]] = []
        self.accounts: list[_Account] = []

    def run(self) -> dict[str, int]:
        self._users()
        pricebook_id = self._catalogue()
        self._accounts()
        self._contacts()
        self._orders(pricebook_id)
        self._organization()
        if self._multi_currency:
            self._currencies()
        self.store.recompute_order_totals()
        self.store.analyze()
        return self.stats

    def _insert(self, sobject: str, rows: list[dict]) -> None:
        self.store.bulk_insert(sobject, rows)
        self.stats[sobject] += len(rows)

    def _past(self, oldest: int, newest: int) -> int:
        """A moment between ``oldest`` and ``newest`` seconds ago."""
        return self.now - self.rng.randint(newest, oldest)

    def _later(self, moment: int, most: int) -> int:
        """A moment after ``moment`` by at most ``most`` seconds, never in the future."""
        return moment + self.rng.randint(0, max(0, min(most, self.now - moment)))

    # -- users, catalogue -------------------------------------------------------------------

    def _users(self) -> None:
        admin = self.store.integration_user_id
        self.reps = self.store.new_ids("User", len(SALES_REPS))
        rows = []
        for user_id, (first, last) in zip(self.reps, SALES_REPS, strict=True):
            created = self._past(1_600 * DAY, 1_500 * DAY)
            username = f"{first}.{last}".lower().replace("'", "") + "@example.com"
            rows.append(
                {
                    "Id": user_id,
                    "Username": username,
                    "FirstName": first,
                    "LastName": last,
                    "Name": f"{first} {last}",
                    "Email": username,
                    "IsActive": 1,
                    **_audit(created, created, created, admin, admin),
                }
            )
        self._insert("User", rows)

    def _catalogue(self) -> str:
        admin = self.store.integration_user_id
        created = self._past(1_500 * DAY, 1_400 * DAY)
        pricebook_id = self.store.new_ids("Pricebook2", 1)[0]
        self._insert(
            "Pricebook2",
            [
                {
                    "Id": pricebook_id,
                    "Name": "Standard Price Book",
                    "IsActive": 1,
                    "IsStandard": 1,
                    **_audit(created, created, created, admin, admin),
                }
            ],
        )
        product_ids = self.store.new_ids("Product2", len(PRODUCTS))
        entry_ids = self.store.new_ids("PricebookEntry", len(PRODUCTS))
        products, entries = [], []
        for product_id, entry_id, (name, code, family, price) in zip(
            product_ids, entry_ids, PRODUCTS, strict=True
        ):
            audit = _audit(created, created, created, admin, admin)
            products.append(
                {
                    "Id": product_id,
                    "Name": name,
                    "ProductCode": code,
                    "Family": family,
                    "IsActive": 1,
                    **audit,
                }
            )
            entries.append(
                {
                    "Id": entry_id,
                    "Pricebook2Id": pricebook_id,
                    "Product2Id": product_id,
                    "UnitPrice": price,
                    "IsActive": 1,
                    "ProductCode": code,
                    "Name": name,
                    **audit,
                }
            )
            self.entries.append((entry_id, product_id, price))
        self.free_entries = [e for e in self.entries if e[2] == 0.0]
        self._insert("Product2", products)
        self._insert("PricebookEntry", entries)
        return pricebook_id

    @property
    def _multi_currency(self) -> bool:
        return self.store.schema.get("CurrencyType") is not None

    def _organization(self) -> None:
        """The org's one Organization record: its currency is every amount's in a single-currency org."""
        admin = self.store.integration_user_id
        created = self.now - (RATE_PERIODS + 1) * RATE_PERIOD
        (org_id,) = self.store.new_ids("Organization", 1)
        self._insert(
            "Organization",
            [{"Id": org_id, "Name": "Sandbox Org", "DefaultCurrencyIsoCode": CURRENCY_CODES[0], "IsSandbox": 1, **_audit(created, created, created, admin, admin)}],
        )

    def _currencies(self) -> None:
        """The org's currencies and, as with advanced currency management on, their rates by period.

        Computed, not drawn from the generator's random stream, so the rest of the org stays as it was."""
        admin = self.store.integration_user_id
        created = self.now - (RATE_PERIODS + 1) * RATE_PERIOD
        audit = _audit(created, created, created, admin, admin)
        codes = [code for code in CURRENCY_CODES if code in CONVERSION_RATES]
        self._insert(
            "CurrencyType",
            [
                {
                    "Id": currency_id,
                    "IsoCode": code,
                    "ConversionRate": CONVERSION_RATES[code],
                    "DecimalPlaces": 2,
                    "IsActive": 1,
                    "IsCorporate": int(code == CURRENCY_CODES[0]),
                    **audit,
                }
                for currency_id, code in zip(self.store.new_ids("CurrencyType", len(codes)), codes, strict=True)
            ],
        )
        starts = [FIRST_RATE_START] + [_day(self.now - n * RATE_PERIOD) for n in range(RATE_PERIODS - 1, 0, -1)]
        rows = []
        for code in codes[1:]:  # the corporate currency has no dated rates: it is always 1
            for period, (start, next_start) in enumerate(zip(starts, [*starts[1:], LAST_RATE_END], strict=True)):
                swing = 1 + 0.04 * math.sin(period + len(code) * ord(code[0]))
                rows.append(
                    {
                        "IsoCode": code,
                        "ConversionRate": round(CONVERSION_RATES[code] * swing, 6),
                        "StartDate": start,
                        "NextStartDate": next_start,
                        **audit,
                    }
                )
        for row, rate_id in zip(rows, self.store.new_ids("DatedConversionRate", len(rows)), strict=True):
            row["Id"] = rate_id
        self._insert("DatedConversionRate", rows)

    # -- accounts and contacts --------------------------------------------------------------

    def _random_address(self) -> Address:
        rng = self.rng
        city, state, postal, country, _currency = rng.choice(CITIES)
        street = f"{rng.randint(1, 9_999)} {rng.choice(STREETS)}"
        if rng.random() < 0.15:
            street += "\n" + rng.choice(STREET_SECOND_LINES)  # Salesforce streets are multi-line
        return street, city, state, postal, country

    def _company_name(self) -> str:
        rng = self.rng
        return f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)} {rng.choice(COMPANY_FORMS)}".strip()

    def _accounts(self) -> None:
        rng = self.rng
        count = max(1, round(self.options.orders / ORDERS_PER_ACCOUNT)) if self.options.orders else 0
        ids = self.store.new_ids("Account", count)
        # A small org gets as many of the special names as it has accounts.
        special = dict(
            zip(
                rng.sample(range(count), min(len(SPECIAL_ACCOUNT_NAMES), count)),
                SPECIAL_ACCOUNT_NAMES,
                strict=False,
            )
        )
        multi_location = set(
            rng.sample(range(count), min(count, max(1, round(count * MULTI_LOCATION_SHARE))))
        )
        depth = [1] * count
        next_customer_number = 1
        rows = []
        for index, account_id in enumerate(ids):
            parent = self._parent_index(index, depth)
            billing = self._random_address()
            if parent is not None:
                depth[index] = depth[parent] + 1
            if index in special:
                name = special[index]
            elif parent is not None:
                name = f"{rows[parent]['Name']} - {billing[1]}"  # a site of its parent company
            else:
                name = self._company_name()
            account = _Account(
                account_id, name, rng.choice(self.reps), billing, None, CURRENCY_BY_COUNTRY[billing[4]]
            )
            if index in multi_location:
                account.locations = [self._random_address() for _ in range(rng.randint(2, 4))]
                account.shipping = account.locations[0]
            elif rng.random() >= ACCOUNT_WITHOUT_SHIPPING_SHARE:
                account.shipping = billing if rng.random() < 0.6 else self._random_address()
            customer_id = None
            if rng.random() < CUSTOMER_ID_SHARE:
                customer_id = f"CUST-{next_customer_number:06d}"
                next_customer_number += 1
            created = self._past(ORDER_AGE_SPAN + 400 * DAY, ORDER_AGE_SPAN + 30 * DAY)
            modified = self._later(created, 600 * DAY)
            rows.append(
                {
                    "Id": account_id,
                    "Name": name,
                    "ParentId": ids[parent] if parent is not None else None,
                    "Type": rng.choice(ACCOUNT_TYPES),
                    **_address_fields("Billing", billing),
                    **_address_fields("Shipping", account.shipping),
                    "Phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                    "Website": f"https://www.example-{index}.com" if rng.random() < 0.5 else None,
                    "AccountNumber": f"AC{rng.randint(100_000, 999_999)}" if rng.random() < 0.3 else None,
                    "Description": None,
                    CUSTOMER_ID_FIELD: customer_id,
                    "OwnerId": account.owner_id,
                    **_audit(
                        created, modified, self._later(modified, DAY), account.owner_id, account.owner_id
                    ),
                }
            )
            self.accounts.append(account)
        self._insert("Account", rows)

    def _parent_index(self, index: int, depth: list[int]) -> int | None:
        """The parent of the index-th account, or None. The first three accounts always form a
        three-level chain, so every generated org holds the deepest hierarchy."""
        if index in (1, 2):
            return index - 1
        if index < 3 or self.rng.random() >= CHILD_ACCOUNT_SHARE:
            return None
        candidate = self.rng.randrange(index)
        return candidate if depth[candidate] < MAX_HIERARCHY_DEPTH else None

    def _contacts(self) -> None:
        rng = self.rng
        rows = []
        for account in self.accounts:
            for _ in range(rng.randint(1, 3)):
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                created = self._past(ORDER_AGE_SPAN + 30 * DAY, ORDER_AGE_SPAN)
                rows.append(
                    {
                        "AccountId": account.id,
                        "FirstName": first,
                        "LastName": last,
                        "Name": f"{first} {last}",
                        "Email": f"contact{len(rows)}@example.com",
                        "Phone": f"555-{rng.randint(100, 199):04d}",
                        "OwnerId": account.owner_id,
                        **_audit(created, created, created, account.owner_id, account.owner_id),
                    }
                )
        for row, contact_id in zip(rows, self.store.new_ids("Contact", len(rows)), strict=True):
            row["Id"] = contact_id
        self._insert("Contact", rows)

    # -- orders and their products ----------------------------------------------------------

    def _order_accounts(self, count: int) -> list[int]:
        """The account (by index) of each order: random, but multi-location accounts get several."""
        chosen = [self.rng.randrange(len(self.accounts)) for _ in range(count)]
        forced = [
            i
            for i, a in enumerate(self.accounts)
            if a.locations
            for _ in range(ORDERS_PER_MULTI_LOCATION_ACCOUNT)
        ]
        chosen[: len(forced)] = forced[:count]
        return chosen

    def _orders(self, pricebook_id: str) -> None:
        rng, count = self.rng, self.options.orders
        # Creation times first, sorted, so Ids and OrderNumbers rise with CreatedDate as in an org.
        created = sorted(self.now - int(ORDER_AGE_SPAN * rng.random() ** 2) - 3_600 for _ in range(count))
        account_of = self._order_accounts(count)
        dirty = rng.sample(range(count), round(count * self.options.dirty_share))
        dirty_kind = {order: DIRTY_KINDS[n % len(DIRTY_KINDS)] for n, order in enumerate(dirty)}
        zero_total = set(rng.sample(range(count), max(1, round(count * ZERO_TOTAL_SHARE)) if count else 0))
        for start in range(0, count, CHUNK_ORDERS):
            stop = min(start + CHUNK_ORDERS, count)
            order_ids = self.store.new_ids("Order", stop - start)
            numbers = self.store.next_auto_numbers("Order", "OrderNumber", stop - start)
            orders, items = [], []
            for offset, index in enumerate(range(start, stop)):
                order = self._order(self.accounts[account_of[index]], created[index], pricebook_id)
                order.update(Id=order_ids[offset], OrderNumber=numbers[offset])
                if index in dirty_kind:
                    self._make_dirty(order, dirty_kind[index])
                items += self._items(order, created[index], zero=index in zero_total)
                orders.append(order)
            for item, item_id, number in zip(
                items,
                self.store.new_ids("OrderItem", len(items)),
                self.store.next_auto_numbers("OrderItem", "OrderItemNumber", len(items)),
                strict=True,
            ):
                item.update(Id=item_id, OrderItemNumber=number)
            self._insert("Order", orders)
            self._insert("OrderItem", items)

    def _order(self, account: _Account, created: int, pricebook_id: str) -> dict:
        rng = self.rng
        activated = rng.random() < self.options.activated_share
        activated_at = self._later(created + 120, 5 * DAY) if activated else None
        touched = activated_at or created
        modified = self._later(touched, 20 * DAY) if rng.random() < 0.3 else touched
        modstamp = self._later(modified, DAY) if rng.random() < 0.3 else modified  # automation after the user
        effective = (
            (activated_at + rng.randint(-3, 3) * DAY) if activated else created + rng.randint(0, 30) * DAY
        )
        if account.locations:
            shipping = account.locations[account.next_location % len(account.locations)]
            account.next_location += 1
        elif account.shipping is not None and rng.random() >= ORDER_WITHOUT_SHIPPING_SHARE:
            shipping = account.shipping
        else:
            shipping = None  # the importer falls back to billing
        card = rng.random() < CARD_SHARE
        card_number = f"4{rng.randrange(10**14):014d}"  # a Visa-like 15-digit prefix
        has_po = rng.random() < 0.6
        return {
            "AccountId": account.id,
            "ContractId": None,
            "OpportunityId": None,
            "Pricebook2Id": pricebook_id,
            "Name": rng.choice(ORDER_NAMES) if rng.random() < 0.3 else None,
            "Status": ACTIVATED_STATUS if activated else DRAFT_STATUS,
            "StatusCode": ACTIVATED_CATEGORY if activated else DRAFT_CATEGORY,
            "EffectiveDate": _day(effective),
            "EndDate": None,
            "ActivatedDate": _stamp(activated_at) if activated else None,
            "ActivatedById": account.owner_id if activated else None,
            "TotalAmount": 0.0,
            **_address_fields("Billing", account.billing),
            **_address_fields("Shipping", shipping),
            "ShippingName": account.name if shipping is not None and rng.random() < 0.2 else None,
            "Description": rng.choice(ORDER_DESCRIPTIONS) if rng.random() < 0.4 else None,
            "PoNumber": f"PO-{rng.randint(10_000, 99_999)}" if has_po else None,
            "PoDate": _day(created - rng.randint(0, 10) * DAY) if has_po else None,
            "Type": rng.choice(ORDER_TYPES) if rng.random() < 0.9 else None,
            **({"CurrencyIsoCode": account.currency} if self._multi_currency else {}),
            CARD_NUMBER_FIELD: card_number + luhn_check_digit(card_number) if card else None,
            CARD_CVV_FIELD: f"{rng.randint(0, 999):03d}" if card else None,
            CARD_EXP_MONTH_FIELD: f"{rng.randint(1, 12):02d}" if card else None,
            CARD_EXP_YEAR_FIELD: str(time.gmtime(created).tm_year + rng.randint(0, 5)) if card else None,
            "OwnerId": account.owner_id,
            **_audit(created, modified, modstamp, account.owner_id, account.owner_id),
        }

    def _poisson(self, mean: float) -> int:
        """Knuth's method: fine for the small means used here."""
        limit, product, count = math.exp(-mean), self.rng.random(), 0
        while product > limit:
            product *= self.rng.random()
            count += 1
        return count

    def _service_numbers(self, count: int) -> list[str | None]:
        """Service number of each product of an order: groups of 2+ sharing one, some alone, some none."""
        rng = self.rng
        if count < 2 or rng.random() >= SERVICE_GROUP_SHARE:
            return [None] * count
        numbers: list[str | None] = []
        while len(numbers) < count:
            remaining = count - len(numbers)
            if remaining >= 2 and rng.random() < 0.7:
                if rng.random() < 0.7:
                    number = f"555-{rng.randint(100, 199):04d}"  # a phone number (TN)
                else:
                    number = f"SN-{rng.randint(100_000, 999_999)}"  # a circuit or account number
                numbers += [number] * rng.randint(2, remaining)
            else:
                numbers.append(None)
        return numbers

    def _items(self, order: dict, created: int, *, zero: bool) -> list[dict]:
        rng = self.rng
        count = self._poisson(self.options.items_per_order)
        if order["StatusCode"] == ACTIVATED_CATEGORY or zero:
            count = max(count, 1)
        audit = _audit(created + 1, created + 1, created + 1, order["OwnerId"], order["OwnerId"])
        items = []
        for number in self._service_numbers(count):
            entry_id, product_id, list_price = rng.choice(self.free_entries if zero else self.entries)
            quantity = float(rng.choice(QUANTITIES))
            unit_price = round(list_price * rng.uniform(0.7, 0.95), 2) if rng.random() < 0.15 else list_price
            items.append(
                {
                    "OrderId": order["Id"],
                    "PricebookEntryId": entry_id,
                    "Product2Id": product_id,
                    "Quantity": quantity,
                    "UnitPrice": unit_price,
                    "ListPrice": list_price,
                    "TotalPrice": round(quantity * unit_price, 2),
                    "Description": None,
                    "ServiceDate": order["EffectiveDate"],
                    "EndDate": None,
                    SERVICE_NUMBER_FIELD: number,
                    **audit,
                }
            )
        return items

    def _make_dirty(self, order: dict, kind: str) -> None:
        """Data Salesforce accepts but an importer must cope with, in the shipping address when
        the order has one, else in the billing address."""
        rng = self.rng
        prefix = "Shipping" if order["ShippingStreet"] or order["ShippingCity"] else "Billing"
        if kind == "missing_city":
            order[f"{prefix}City"] = None
        elif kind == "missing_postal_code":
            order[f"{prefix}PostalCode"] = None
        elif kind == "free_text_country":
            order[f"{prefix}Country"] = rng.choice(FREE_TEXT_COUNTRIES)
        elif kind == "future_effective_date":
            order["EffectiveDate"] = _day(self.now + rng.randint(30, 400) * DAY)
        elif kind == "blank_street":
            order[f"{prefix}Street"] = "   "
        elif kind == "long_street":
            line = "Unit 4, Riverside Industrial Estate, Old Mill Lane, behind the blue warehouse; "
            order[f"{prefix}Street"] = (line * 4)[:250].rstrip()
        elif kind == "street_only":
            order.update(
                {
                    f"{prefix}City": None,
                    f"{prefix}State": None,
                    f"{prefix}PostalCode": None,
                    f"{prefix}Country": None,
                }
            )
        elif kind == "lowercase_state":
            order[f"{prefix}State"] = (order[f"{prefix}State"] or "california").lower()


__all__ = ["DEFAULT_SEED", "GeneratorOptions", "generate", "generate_with", "luhn_check_digit"]
