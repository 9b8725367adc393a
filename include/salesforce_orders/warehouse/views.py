"""The analysts' views of the warehouse (documented in ``docs/warehouse.md``), and keeping them in place.

A view is a derived object: built from :mod:`.definitions` for the dialect at hand, created when
missing, replaced when its definition in this code changed (a fingerprint in ``sync_state`` says
which definitions are in place), dropped before migrations change the tables under it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.sql.ddl import CreateView, DropView

from ..model import SF_ACTIVE
from .definitions import OUTBOX_DEAD, OUTBOX_FAILED, Tables, tables
from .types import utc_now
from .writes import upsert


def _utc_day(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """The UTC calendar day of a UtcDateTime column, as the dialect spells it."""
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)
    return sa.func.date(column)  # SQLite stores the UTC wall time as text


def money_sum(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """The exact sum of an amount column (0 when there is none), as the dialect can give it.

    PostgreSQL sums NUMERIC exactly. SQLite keeps amounts as REAL (the double nearest to the
    cents): summed as integer cents, then divided once, so the sum is the double nearest the exact
    total, which reads back as that total (up to 15 significant digits), never 12780.599999999999.
    """
    if dialect == "postgresql":
        return sa.func.coalesce(sa.func.sum(column), 0)
    cents = sa.cast(sa.func.round(column * 100), sa.Integer)
    return sa.func.coalesce(sa.func.sum(cents), 0) / sa.literal_column("100.0")


def _view_orders_by_customer(t: Tables, dialect: str) -> sa.Select:
    """Per customer and currency: its own active orders, and those of its whole child hierarchy.
    Amounts of different currencies are never added; the corporate amounts sit beside them."""
    c, o = t.customers, t.external_orders
    # Every (ancestor, descendant) pair including (x, x); UNION, not UNION ALL, so a cycle ends.
    tree = sa.select(c.c.customer_id.label("ancestor_id"), c.c.customer_id.label("descendant_id")).cte(
        "customer_tree", recursive=True
    )
    child = c.alias("child")
    tree = tree.union(
        sa.select(tree.c.ancestor_id, child.c.customer_id).where(child.c.parent_customer_id == tree.c.descendant_id)
    )
    own = tree.c.descendant_id == tree.c.ancestor_id
    joined = c.join(tree, tree.c.ancestor_id == c.c.customer_id).outerjoin(
        o, sa.and_(o.c.customer_id == tree.c.descendant_id, o.c.sf_state == SF_ACTIVE)
    )
    # The outer join leaves a group without a currency for every member of the tree without an
    # active order: kept only for a customer none of whose tree has one (its one row of zeros).
    member, active = tree.alias("member"), o.alias("active")
    tree_has_orders = (
        sa.select(active.c.sf_order_id)
        .select_from(member.join(active, sa.and_(active.c.customer_id == member.c.descendant_id, active.c.sf_state == SF_ACTIVE)))
        .where(member.c.ancestor_id == c.c.customer_id)
        .exists()
    )
    return (
        sa.select(
            c.c.customer_id,
            c.c.name,
            c.c.parent_customer_id,
            o.c.currency,
            sa.func.count(sa.case((own, o.c.sf_order_id))).label("own_orders"),
            money_sum(sa.case((own, o.c.total_amount)), dialect).label("own_amount"),
            sa.func.count(o.c.sf_order_id).label("orders_including_children"),
            money_sum(o.c.total_amount, dialect).label("amount_including_children"),
            o.c.corporate_currency,
            money_sum(sa.case((own, o.c.corporate_amount)), dialect).label("own_amount_corporate"),
            money_sum(o.c.corporate_amount, dialect).label("amount_including_children_corporate"),
        )
        .select_from(joined)
        .group_by(c.c.customer_id, c.c.name, c.c.parent_customer_id, o.c.currency, o.c.corporate_currency)
        .having(sa.or_(sa.func.count(o.c.sf_order_id) > 0, ~tree_has_orders))
    )


def _view_revenue_by_day(t: Tables, dialect: str) -> sa.Select:
    o = t.external_orders
    day = _utc_day(o.c.activated_at, dialect).label("day")
    return (
        sa.select(
            day,
            o.c.currency,
            sa.func.count().label("orders"),
            money_sum(o.c.total_amount, dialect).label("revenue"),
            o.c.corporate_currency,
            money_sum(o.c.corporate_amount, dialect).label("revenue_corporate"),
        )
        .where(o.c.sf_state == SF_ACTIVE, o.c.activated_at.is_not(None))
        .group_by(day, o.c.currency, o.c.corporate_currency)
    )


def same_source(row: sa.FromClause, other: sa.FromClause) -> sa.ColumnElement[bool]:
    """Whether two outbox rows come from the same source: the import's, or a shipment's. Only a row
    of the same source supersedes another (a shipment's write to an Order says nothing of the
    import's write that failed on it: that failure stays open, and the other way round)."""
    return sa.or_(
        sa.and_(row.c.shipment_key.is_(None), other.c.shipment_key.is_(None)),
        sa.and_(row.c.shipment_key.is_not(None), other.c.shipment_key.is_not(None)),
    )


def superseded_outbox_row(w: sa.Table) -> sa.Exists:
    """Whether an outbox row has a newer one for the same record from the same source (see :func:`same_source`)."""
    newer = w.alias("newer")
    return (
        sa.select(newer.c.id)
        .where(newer.c.sf_object == w.c.sf_object, newer.c.sf_record_id == w.c.sf_record_id, newer.c.id > w.c.id, same_source(newer, w))
        .exists()
    )


def _view_open_failures(t: Tables, dialect: str) -> sa.Select:
    """Failed or abandoned write-backs not superseded by a newer row for the same record."""
    w, o = t.writeback_outbox, t.external_orders
    superseded = superseded_outbox_row(w)
    return (
        sa.select(
            w.c.id.label("outbox_id"),
            w.c.sf_object,
            w.c.sf_record_id,
            w.c.sf_order_id,
            o.c.order_number,
            o.c.account_name,
            o.c.lifecycle_state,
            w.c.action,
            w.c.state,
            w.c.attempts,
            w.c.last_error_code,
            w.c.last_error_message,
            w.c.next_attempt_at,
            w.c.updated_at,
        )
        .select_from(w.outerjoin(o, o.c.sf_order_id == w.c.sf_order_id))
        .where(w.c.state.in_([OUTBOX_FAILED, OUTBOX_DEAD]), ~superseded)
    )


def _view_quarantined_orders(t: Tables, dialect: str) -> sa.Select:
    q = t.quarantined_orders
    return sa.select(
        q.c.id,
        q.c.run_id,
        q.c.sf_order_id,
        q.c.order_number,
        q.c.account_name,
        q.c.failed_checks,
        q.c.details,
        q.c.card_data_masked,
        q.c.quarantined_at,
    ).where(q.c.released_at.is_(None))


def _view_multi_location_customers(t: Tables, dialect: str) -> sa.Select:
    c = t.customers
    child = c.alias("child")
    child_count = (
        sa.select(sa.func.count()).select_from(child).where(child.c.parent_customer_id == c.c.customer_id).scalar_subquery()
    )
    return sa.select(
        c.c.customer_id,
        c.c.name,
        c.c.sf_account_id,
        c.c.parent_customer_id,
        c.c.location_count,
        child_count.label("child_accounts"),
        c.c.is_multi_location,
    ).where(sa.or_(c.c.is_multi_location.is_(True), child_count > 0))


VIEWS: dict[str, Callable[[Tables, str], sa.Select]] = {
    "v_orders_by_customer": _view_orders_by_customer,
    "v_revenue_by_day": _view_revenue_by_day,
    "v_open_failures": _view_open_failures,
    "v_quarantined_orders": _view_quarantined_orders,
    "v_multi_location_customers": _view_multi_location_customers,
}


VIEWS_KEY = "warehouse.views"  # sync_state key: fingerprint of the view definitions in place


def _view_ddl(t: Tables, dialect: sa.Dialect) -> list[CreateView]:
    return [CreateView(build(t, dialect.name), name, schema=t.metadata.schema) for name, build in VIEWS.items()]


def views_fingerprint(t: Tables, dialect: sa.Dialect) -> str:
    """A hash of this code's view definitions as the dialect spells them."""
    sql = "\n".join(str(view.compile(dialect=dialect)) for view in _view_ddl(t, dialect))
    return hashlib.sha256(sql.encode()).hexdigest()


def stored_views_fingerprint(conn: sa.Connection, t: Tables) -> str | None:
    """The fingerprint of the views in place, as the last (re)creation recorded it."""
    return conn.execute(sa.select(t.sync_state.c.value).where(t.sync_state.c.key == VIEWS_KEY)).scalar()


def ensure_views(conn: sa.Connection, t: Tables, present: set[str]) -> list[str]:
    """Create the views missing from ``present``; replace them all when their definitions in this
    code changed. Returns the names (re)created. Views in place and current are left alone, so
    analysts' queries are not blocked by a DROP on every task."""
    views = _view_ddl(t, conn.dialect)
    if stored_views_fingerprint(conn, t) != views_fingerprint(t, conn.dialect):
        _replace_views(conn, t, views)
        return [view.table.name for view in views]
    missing = [view for view in views if view.table.name not in present]
    for view in missing:
        conn.execute(view)
    return [view.table.name for view in missing]


def drop_views(conn: sa.Connection, t: Tables) -> None:
    """Drop the views (before migrations change the tables under them; recreated afterwards)."""
    for view in _view_ddl(t, conn.dialect):
        conn.execute(DropView(view.table, if_exists=True))


def _replace_views(conn: sa.Connection, t: Tables, views: list[CreateView]) -> None:
    for view in views:
        conn.execute(DropView(view.table, if_exists=True))
        conn.execute(view)
    fingerprint = views_fingerprint(t, conn.dialect)
    upsert(conn, t.sync_state, [{"key": VIEWS_KEY, "value": fingerprint, "updated_at": utc_now()}], ["key"])


def create_views(engine: sa.Engine, schema: str | None = None) -> None:
    """(Re)create the analyst views in one transaction (the tables must exist)."""
    t = tables(schema)
    with engine.begin() as conn:
        _replace_views(conn, t, _view_ddl(t, conn.dialect))


__all__ = [
    "VIEWS",
    "VIEWS_KEY",
    "create_views",
    "drop_views",
    "ensure_views",
    "money_sum",
    "stored_views_fingerprint",
    "superseded_outbox_row",
    "views_fingerprint",
]
