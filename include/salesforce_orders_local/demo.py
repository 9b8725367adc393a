"""``make run``: the import DAG once, end to end, on the embedded default (sandbox + SQLite).

Starts the local Salesforce sandbox with a demo org (kept in ``.local/sandbox`` so a second run
sees the same org), points the ``salesforce_default`` and ``orders_warehouse`` connections at it
and at ``.local/warehouse.db``, runs the DAG with ``dag.test()`` and prints what happened.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from .airflow_env import (
    PROJECT_ROOT,
    configure,
    connection_env,
    run_dag,
    sqlite_warehouse_connection,
)

STATE_DIR = PROJECT_ROOT / ".local"


def start_sandbox(state_dir: Path, orders: int, seed: int, port: int | None = None) -> Any:
    """The demo org, on the port it had last time (kept in ``sandbox/port``): the warehouse's links
    back to Salesforce (``salesforce_url``) name it, so they keep working from one run to the next.
    The first start takes a free port; a remembered port someone else took meanwhile too."""
    from salesforce_sandbox.server import SandboxServer

    sandbox_dir = state_dir / "sandbox"
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    remembered = sandbox_dir / "port"
    if port is None:
        port = int(remembered.read_text()) if remembered.exists() else 0

    def start(on_port: int) -> Any:
        return SandboxServer(port=on_port, db_path=str(sandbox_dir / "org.db"), orders=orders, seed=seed, state_dir=sandbox_dir).start()

    try:
        server = start(port)
    except OSError:
        if not port:
            raise
        print(f"Port {port} is taken: the sandbox starts on another, and links of earlier runs point to the old one.", flush=True)
        server = start(0)
    remembered.write_text(str(server.port))
    return server


def _rows(engine: Any, sql: str, **params: Any) -> list[dict]:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def _plural(sf_object: str, n: int) -> str:
    name = {"OrderItem": "order product"}.get(sf_object, sf_object.lower())
    return name if n == 1 else f"{name}s"


def print_report(warehouse_path: Path, run_id: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{warehouse_path}")
    run = _rows(engine, "SELECT * FROM import_runs WHERE run_id = :r", r=run_id)
    if not run:
        print("The run left no import_runs row: see the task logs above.")
        return
    r = run[0]
    print()
    print("=" * 78)
    print(f"Salesforce orders import: {str(r['status']).upper()}  (mode {r['mode']})")
    print("=" * 78)
    print(f"extracted {r['extracted']:>6}   valid {r['valid']:>6}   quarantined {r['quarantined']:>5}   skipped {r['skipped']}")
    print(f"inserted  {r['inserted']:>6}   updated {r['updated']:>4}   unchanged {r['unchanged']:>7}   marked inactive {r['deactivated']}")
    written = {o["sf_object"]: o["n"] for o in _rows(
        engine,
        "SELECT sf_object, COUNT(*) AS n FROM writeback_outbox WHERE updated_run_id = :r AND state = 'DONE' GROUP BY sf_object",
        r=run_id,
    )}
    by_object = ", ".join(f"{n} {_plural(sf_object, n)}" for sf_object, n in sorted(written.items()))
    print(
        f"written back {r['written_back']} records{f' ({by_object})' if by_object else ''}   "
        f"write-back failures {r['writeback_failed']}   API calls {r['api_calls']}   {r['duration_seconds']} s"
    )
    if not any(r[name] for name in ("inserted", "updated", "quarantined", "skipped", "deactivated")):
        print("\nNothing new to import: every order in Salesforce is already in the warehouse, unchanged.")
    orders = _rows(
        engine,
        "SELECT external_name, service_street, service_city, service_postal_code, service_country_code, "
        "service_address_source, destination, lifecycle_state, customer_id FROM external_orders "
        "ORDER BY last_imported_at DESC, order_number LIMIT 5",
    )
    if orders:
        print("\nSome loaded orders:")
        for o in orders:
            address = ", ".join(" ".join(str(v).split()) for v in (o["service_street"], o["service_city"], o["service_postal_code"], o["service_country_code"]) if v)
            print(f"  {o['external_name'][:40]:<40} {o['lifecycle_state']:<10} {o['destination']:<10} customer {o['customer_id']}")
            print(f"  {'':<40} service address ({o['service_address_source']}): {address}")
    quarantined = _rows(
        engine,
        "SELECT order_number, account_name, details FROM quarantined_orders WHERE run_id = :r ORDER BY order_number LIMIT 5",
        r=run_id,
    )
    if quarantined:
        print(f"\nQuarantined this run ({r['quarantined']}), first {len(quarantined)}:")
        for q in quarantined:
            details = q["details"]
            if isinstance(details, str):
                import json

                details = json.loads(details)
            print(f"  {q['order_number']} {str(q['account_name'])[:30]}: {'; '.join(details.values())[:150]}")
    outbox = _rows(engine, "SELECT sf_object, action, state, COUNT(*) AS n FROM writeback_outbox GROUP BY sf_object, action, state ORDER BY 1, 2, 3")
    if outbox:
        print("\nWrite-back to Salesforce (all runs):")
        for o in outbox:
            print(f"  {o['sf_object']:<8} {o['action']:<28} {o['state']:<10} {o['n']}")
    print(f"\nWarehouse: {warehouse_path}  (tables documented in docs/warehouse.md)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=500, help="orders in the demo org (first start only)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="start from a new org and an empty warehouse")
    parser.add_argument("--verbose", action="store_true", help="show Airflow's task logs")
    args = parser.parse_args(argv)

    if args.fresh and STATE_DIR.exists():
        for name in ("sandbox", "warehouse.db", "airflow"):
            target = STATE_DIR / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    print(f"Starting the Salesforce sandbox ({args.orders} orders, seed {args.seed}) ...", flush=True)
    server = start_sandbox(STATE_DIR, args.orders, args.seed)
    warehouse = STATE_DIR / "warehouse.db"
    env = {
        **connection_env("salesforce_default", server.airflow_connection()),
        **connection_env("orders_warehouse", sqlite_warehouse_connection(warehouse)),
    }
    if not args.verbose:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    try:
        print("Preparing the local Airflow (first run migrates its metadata DB) ...", flush=True)
        configure(STATE_DIR / "airflow", env)
        if not args.verbose:
            # the run's warnings (quarantined orders, masked card numbers) are in the summary and
            # the warehouse; above it they would only bury it
            logging.disable(logging.WARNING)
            warnings.simplefilter("ignore")
        print("Running the salesforce_orders_import DAG ...", flush=True)
        dag_run = run_dag()
        logging.disable(logging.NOTSET)
        print_report(warehouse, dag_run.run_id)
        state = str(getattr(dag_run.state, "value", dag_run.state))
        print(f"\nDAG run {dag_run.run_id}: {state}")
        return 0 if state == "success" else 1
    finally:
        server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
