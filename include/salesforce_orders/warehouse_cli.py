"""``salesforce-orders-warehouse``: the warehouse's schema, for whoever owns it.

    salesforce-orders-warehouse status              the schema version, and what an upgrade would do
    salesforce-orders-warehouse upgrade             create or upgrade the warehouse (and its views)
    salesforce-orders-warehouse grants ROLE         PostgreSQL: the GRANTs a least-privilege import role needs
    salesforce-orders-warehouse new-migration MSG   developers: a new migration script after the newest
    salesforce-orders-warehouse add-shipment ...    a shipment of an imported order, for the shipments DAG to send

The warehouse is the import's (the ``salesforce_orders_config`` Variable's ``warehouse_conn_id``
and ``warehouse_schema``), or ``--conn-id`` / ``--url`` and ``--schema``: an owner whose
credentials the import's connection does not have passes them here.
"""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa


def _target(args: argparse.Namespace) -> tuple[sa.Engine, str | None, str]:
    """The engine, the schema and how to name the warehouse in messages."""
    from .warehouse.engines import engine_from_connection, warehouse_engine

    config = None
    if args.schema is None or (args.url is None and args.conn_id is None):
        from .config import load_config

        config = load_config()
    schema = args.schema if args.schema is not None else config.warehouse_schema
    if args.url:
        engine = warehouse_engine(sa.engine.make_url(args.url))
    else:
        engine = engine_from_connection(args.conn_id or config.warehouse_conn_id)
    return engine, schema or None, f"{engine.url.render_as_string(hide_password=True)}, schema {schema or '(default)'}"


def _status(args: argparse.Namespace) -> int:
    from .schema_versions import head_version, pending_work, read_state
    from .warehouse.definitions import tables

    engine, schema, named = _target(args)
    with engine.connect() as conn:
        state = read_state(conn, tables(schema))
        work = pending_work(conn, tables(schema), state)
    print(f"Warehouse {named}")
    print(f"  schema version: {state.version or ('none (empty)' if state.is_empty else 'none (created before schema versions)')}")
    print(f"  this code's version: {head_version()}")
    print("  an upgrade would do: " + ("; ".join(work) if work else "nothing, it is current"))
    return 3 if work else 0


def _upgrade(args: argparse.Namespace) -> int:
    from .schema_versions import head_version, upgrade

    engine, schema, named = _target(args)
    done = upgrade(engine, schema)
    print(f"Warehouse {named}")
    for line in done or [f"current already (schema version {head_version()}): nothing to do"]:
        print(f"  {line}")
    return 0


def _grants(args: argparse.Namespace) -> int:
    from .schema_versions import import_role_grants

    engine, schema, _named = _target(args)
    if engine.dialect.name != "postgresql":
        print("grants: only PostgreSQL warehouses have roles", file=sys.stderr)
        return 2
    with engine.connect() as conn:
        database, current_schema, user = conn.execute(sa.select(sa.func.current_database(), sa.func.current_schema(), sa.func.current_user())).one()
    statements = import_role_grants(args.role, schema=schema or current_schema, database=database, owner=args.owner or user)
    print(";\n".join(statements) + ";")
    return 0


def _new_migration(args: argparse.Namespace) -> int:
    from .schema_versions import new_migration

    print(new_migration(args.message))
    return 0


def _add_shipment(args: argparse.Namespace) -> int:
    from .schema_versions import upgrade
    from .shipments import ShipmentInputError, add_shipment
    from .warehouse.definitions import tables

    engine, schema, named = _target(args)
    lines = []
    for given in args.line:
        item_id, _, quantity = given.partition(":")
        lines.append({"sf_order_item_id": item_id.strip(), "quantity": quantity.strip()})
    shipment = {
        "shipment_key": args.key, "sf_order_id": args.order_id, "order_number": args.order_number, "carrier": args.carrier,
        "service": args.service, "tracking_number": args.tracking_number, "tracking_url": args.tracking_url,
        "shipped_date": args.shipped_date,
    }
    upgrade(engine, schema)
    try:
        with engine.begin() as conn:
            added = add_shipment(conn, tables(schema), shipment, lines)
    except ShipmentInputError as exc:
        print(f"add-shipment: {exc}", file=sys.stderr)
        return 2
    if added:
        print(f"Shipment {args.key!r} added to {named}; the shipments DAG checks and sends it within minutes")
    else:
        print(f"Shipment {args.key!r} is already in {named}: nothing changed")
    return 0


def _shipment_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--key", required=True, help="the shipment key: adding the same key again changes nothing")
    order = command.add_mutually_exclusive_group(required=True)
    order.add_argument("--order-id", help="the order's Salesforce Id")
    order.add_argument("--order-number", help="the order's OrderNumber")
    command.add_argument("--carrier")
    command.add_argument("--service", help="e.g. Ground, Next Day Air")
    command.add_argument("--tracking-number")
    command.add_argument("--tracking-url")
    command.add_argument("--shipped-date", help="YYYY-MM-DD")
    command.add_argument("--line", action="append", default=[], metavar="ORDER_ITEM_ID:QUANTITY", help="an order product shipped (repeat per product)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="salesforce-orders-warehouse", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("status", _status, "the schema version and what an upgrade would do (exit 3 when there is work)"),
        ("upgrade", _upgrade, "create or upgrade the warehouse to this code's schema version, views included"),
        ("grants", _grants, "PostgreSQL: print the GRANTs a least-privilege role needs to run the import"),
        ("add-shipment", _add_shipment, "add a shipment of an imported order (sent to Salesforce by the shipments DAG)"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.set_defaults(run=run)
        where = command.add_mutually_exclusive_group()
        where.add_argument("--conn-id", help="an Airflow connection (default: the config's warehouse_conn_id)")
        where.add_argument("--url", help="a SQLAlchemy URL instead, e.g. postgresql+psycopg://owner@db/warehouse")
        command.add_argument("--schema", help="the warehouse schema (default: the config's warehouse_schema)")
        if name == "grants":
            command.add_argument("role", help="the role the import's connection logs in as")
            command.add_argument("--owner", help="the role that runs upgrades (default: the one connecting here)")
        if name == "add-shipment":
            _shipment_arguments(command)
    migration = commands.add_parser("new-migration", help="developers: a new migration script after the newest")
    migration.add_argument("message", help="what it changes, e.g. 'add card_data_masked to external_orders'")
    migration.set_defaults(run=_new_migration)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
