"""``make bench-latency``: seconds from an order's activation in Salesforce to its write-back COMPLETE.

Under ``airflow standalone`` (scheduler, dag-processor, api-server and triggerer) against the
sandbox and a PostgreSQL warehouse (a schema of its own per mode; SQLite's one writer at a time
would have the import, the trigger and the downstream example DAG wait for each other), once per mode:

- ``events``: the import's event-driven runs on (``events.enabled``) beside the 15-minute schedule;
- ``schedule``: the schedule alone (events off).

Each mode starts a fresh Airflow and org, waits for the first scheduled run (the initial load) to
finish, then activates orders one by one at random intervals, as users would, and watches the
warehouse until each order's lifecycle is COMPLETE (written back to Salesforce). It prints p50 / p95
/ max per mode and writes them as JSON.

The org is generated without the generator's dirty orders (:data:`ORG_OPTIONS`), so every order it
activates is one the import accepts; one the import quarantines or skips all the same is named and
no longer waited for (:func:`refused_orders`). SIGTERM and SIGINT stop Airflow and drop the
metadata database and the warehouse schema as a normal end does.

    python -m salesforce_orders_local.bench_latency --activations 12 --modes events schedule

The Airflow settings the events mode runs with are :data:`LATENCY_SETTINGS` (printed with the
figures); README's *Event-driven import* explains where the seconds go.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import local_airflow
from .airflow_env import DAG_ID, PROJECT_ROOT
from .bench import DEFAULT_PG
from .local_airflow import (
    Component,
    airflow_command,
    cleanup_on_signals,
    local_airflow_env,
    migrate_metadata_database,
    throwaway_database,
)

POLL_SECONDS = 0.25  # how often the warehouse is looked at: the figures' resolution
STOP_TIMEOUT_SECONDS = 60
# Airflow settings for short reaction times (events mode): what a run waits for between its steps.
LATENCY_SETTINGS = {
    # The scheduler sleeps this long when a loop found nothing to do (default 1 s): a finished task's
    # successor, or a new asset event's run, waits up to that.
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    # LocalExecutor: several task processes ready at once (the run's tasks are sequential; the
    # report of one run may overlap the next run's extract).
    "AIRFLOW__CORE__PARALLELISM": "4",
}

# The bench's org: no dirty orders (a missing city, a free-text country, a far EffectiveDate, …),
# which the generator makes for the import to quarantine. An activated order that is quarantined
# never reaches COMPLETE.
ORG_OPTIONS = {"dirty_share": 0.0}


def orders_to_activate(store: Any, count: int) -> list[str]:
    """``count`` Draft orders with products of an org generated with :data:`ORG_OPTIONS`: each one,
    once activated, valid for the import."""
    chosen = store.activatable_order_ids(count)
    if len(chosen) < count:
        raise SystemExit(f"the org has only {len(chosen)} Draft orders with products to activate, not {count}: "
                         "ask for fewer --activations or more --orders")
    return chosen


def refused_orders(engine: Any, schema: str | None, order_ids: list[str]) -> dict[str, str]:
    """Of ``order_ids``, those the import quarantined or skipped (and has not released since), each
    with why: they will not reach COMPLETE, however long one waits."""
    import sqlalchemy as sa

    from salesforce_orders.warehouse import tables

    t = tables(schema)
    quarantined = sa.select(t.quarantined_orders.c.sf_order_id, t.quarantined_orders.c.failed_checks).where(
        t.quarantined_orders.c.sf_order_id.in_(order_ids), t.quarantined_orders.c.released_at.is_(None))
    skipped = sa.select(t.skipped_orders.c.sf_order_id, t.skipped_orders.c.reason).where(
        t.skipped_orders.c.sf_order_id.in_(order_ids), t.skipped_orders.c.released_at.is_(None))
    with engine.connect() as conn:
        refused = {order_id: f"quarantined (failed checks: {', '.join(checks)})"
                   for order_id, checks in conn.execute(quarantined)}
        refused.update((order_id, f"skipped ({reason})") for order_id, reason in conn.execute(skipped))
    return refused


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarise(latencies: list[float]) -> dict[str, Any]:
    return {
        "samples": len(latencies),
        "p50_s": round(statistics.median(latencies), 1) if latencies else None,
        "p95_s": round(percentile(latencies, 0.95), 1) if latencies else None,
        "max_s": round(max(latencies), 1) if latencies else None,
    }


def _warehouse_rows(engine: Any, schema: str, sql: str, **params: Any) -> list[tuple]:
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'SET search_path TO "{schema}"'))
            return conn.execute(sa.text(sql), params).fetchall()
    except sa.exc.ProgrammingError:  # the tables are not created yet
        return []


STAGE_ORDER = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back")


def where_time_goes(metadata_url: str) -> dict[str, float]:
    """Mean seconds per step of the import's runs, from Airflow's metadata: the run waiting to start
    (queued behind the previous run), each stage up to the write-back, and the scheduler's gaps
    between one stage's end and the next one's start (queueing and task start-up included)."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            runs = conn.execute(sa.text(
                "SELECT run_id, run_after, start_date FROM dag_run WHERE dag_id = :d AND start_date IS NOT NULL "
                "AND run_type IN ('asset_triggered', 'scheduled') ORDER BY start_date OFFSET 1"), {"d": DAG_ID}).all()
            tasks = conn.execute(sa.text(
                "SELECT run_id, task_id, start_date, end_date FROM task_instance WHERE dag_id = :d "
                "AND start_date IS NOT NULL AND end_date IS NOT NULL"), {"d": DAG_ID}).all()
    finally:
        engine.dispose()
    by_run: dict[str, dict[str, tuple]] = {}
    for run_id, task_id, start, end in tasks:
        # a mapped stage (the transform) has an instance per partition: from the first start to the last end
        first, last = by_run.setdefault(run_id, {}).get(task_id, (start, end))
        by_run[run_id][task_id] = (min(first, start), max(last, end))
    steps: dict[str, list[float]] = {}
    for run_id, run_after, started in runs:  # the first run, the initial load, is left out
        stages = by_run.get(run_id, {})
        if not all(name in stages for name in STAGE_ORDER):
            continue
        steps.setdefault("created → started (waiting for the previous run)", []).append((started - run_after).total_seconds())
        steps.setdefault("started → extract starts", []).append((stages["extract"][0] - started).total_seconds())
        for before, after in zip(STAGE_ORDER, STAGE_ORDER[1:], strict=False):
            steps.setdefault(before, []).append((stages[before][1] - stages[before][0]).total_seconds())
            steps.setdefault("gaps between stages", []).append((stages[after][0] - stages[before][1]).total_seconds())
        steps.setdefault("write_back", []).append((stages["write_back"][1] - stages["write_back"][0]).total_seconds())
    return {step: round(statistics.mean(values), 2) for step, values in steps.items()}


def _drop_schema(engine: Any, schema: str) -> None:
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def bench_mode(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import sqlalchemy as sa

    from salesforce_orders.order_events import ReplayStore
    from salesforce_sandbox.events import CHANGE_EVENT_TOPIC, replay_bytes
    from salesforce_sandbox.server import SandboxServer

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    url = sa.make_url(args.pg_url)
    schema = f"bench_latency_{mode}_{uuid.uuid4().hex[:8]}"
    events_on = mode == "events"
    with ExitStack() as cleanup:  # undone last first: Airflow, the org, the metadata DB, the schema
        engine = sa.create_engine(url)
        cleanup.callback(engine.dispose)
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
        cleanup.callback(_drop_schema, engine, schema)
        # Airflow's metadata on PostgreSQL too: scheduler, triggerer, dag-processor and api-server all
        # write it at once, which SQLite's one writer turns into waits (and stalls).
        metadata_url = cleanup.enter_context(throwaway_database(url, "airflow_bench"))
        org = SandboxServer(port=0, orders=args.orders, seed=args.seed, state_dir=work / "sandbox",
                            generator_options=ORG_OPTIONS).start()
        cleanup.callback(org.stop)
        candidates = orders_to_activate(org.store, args.activations)
        home = work / "airflow"
        home.mkdir()
        env = {
            **local_airflow_env(
                home,
                metadata_db_url=metadata_url,
                # Task processes report to the api-server's execution API: on the port it listens on.
                api_url=f"http://localhost:{args.port}",
                salesforce_connection=org.airflow_connection(),
                warehouse_url=url,
                import_config={
                    "enabled": True, "warehouse_schema": schema,
                    "events": {"enabled": events_on, "window_seconds": args.window_seconds}},
            ),
            "SALESFORCE_ORDERS_SCHEDULE": args.schedule,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__PORT": str(args.port),
            **(LATENCY_SETTINGS if events_on or args.tune_schedule else {}),
        }
        migrate_metadata_database(env)
        if events_on:
            # The trigger resumes from here: an activation made before it has subscribed is not missed.
            ReplayStore(engine, schema, CHANGE_EVENT_TOPIC).save(replay_bytes(org.events.latest_replay()))
        # standalone's components (scheduler, triggerer, …) are in its process group: stopped with it
        standalone = Component("standalone", airflow_command("standalone"), env, work / "standalone.log")
        standalone.launch()
        cleanup.callback(local_airflow.stop, [standalone], STOP_TIMEOUT_SECONDS)

        def wait(condition: Any, what: str, timeout: float) -> Any:
            return local_airflow.wait_until(condition, what, timeout, [standalone], poll_seconds=POLL_SECONDS)

        print(f"[{mode}] waiting for the first scheduled run (the initial load) …", flush=True)
        wait(lambda: _warehouse_rows(engine, schema, "SELECT 1 FROM import_runs WHERE status = 'success'"),
             "the initial load", args.startup_timeout)
        rng = random.Random(args.seed)
        activated_at: dict[str, float] = {}
        completed_at: dict[str, float] = {}
        refused: dict[str, str] = {}  # activated orders the import refused: not waited for

        def note_completions() -> None:
            waiting = [o for o in activated_at if o not in completed_at and o not in refused]
            if not waiting:
                return
            rows = _warehouse_rows(engine, schema, "SELECT sf_order_id FROM external_orders "
                                   "WHERE lifecycle_state = 'COMPLETE' AND sf_order_id = ANY(:ids)", ids=waiting)
            now = time.time()
            for (order_id,) in rows:
                completed_at.setdefault(order_id, now)
            for order_id, why in refused_orders(engine, schema, [o for o in waiting if o not in completed_at]).items():
                refused[order_id] = why
                print(f"[{mode}] order {order_id} was {why} by the import: it will not reach COMPLETE, "
                      "no longer waited for", flush=True)

        for order_id in candidates:
            gap = (args.min_gap, args.max_gap) if events_on else (args.schedule_min_gap, args.schedule_max_gap)
            pause_until = time.monotonic() + rng.uniform(*gap)
            while time.monotonic() < pause_until:
                note_completions()
                time.sleep(POLL_SECONDS)
            with org.store.lock:
                org.store.update("Order", order_id, {"Status": "Activated"})
            activated_at[order_id] = time.time()
            print(f"[{mode}] activated {order_id}", flush=True)
        wait(lambda: (note_completions(), len(completed_at) + len(refused) == len(activated_at))[1],
             "every activated order COMPLETE (or refused by the import)", args.completion_timeout)
        breakdown = where_time_goes(metadata_url)
    latencies = [completed_at[o] - activated_at[o] for o in activated_at if o in completed_at]
    return {"mode": mode, **summarise(latencies), "latencies_s": [round(v, 1) for v in latencies],
            "refused": refused, "mean_seconds_per_step": breakdown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", choices=["events", "schedule"], default=["events", "schedule"])
    parser.add_argument("--activations", type=int, default=12)
    parser.add_argument("--min-gap", type=float, default=2.0, help="seconds between activations, at least (events)")
    parser.add_argument("--max-gap", type=float, default=30.0, help="seconds between activations, at most (events)")
    parser.add_argument("--schedule-min-gap", type=float, default=20.0,
                        help="seconds between activations, at least, with the schedule alone (spread over its interval)")
    parser.add_argument("--schedule-max-gap", type=float, default=180.0)
    parser.add_argument("--schedule", default="*/15 * * * *", help="the import's cron (both modes)")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="events.window_seconds")
    parser.add_argument("--tune-schedule", action="store_true", help="also run the schedule mode with LATENCY_SETTINGS")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG), help="the warehouse's server")
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8089, help="the api-server's port")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--completion-timeout", type=float, default=1800)
    parser.add_argument("--output", default=str(PROJECT_ROOT / "bench-results" / "bench-latency.json"))
    args = parser.parse_args(argv)

    with cleanup_on_signals():
        results = [bench_mode(mode, args, PROJECT_ROOT / ".local" / "bench-latency" / mode) for mode in args.modes]
    report = {"dag_id": DAG_ID, "schedule": args.schedule, "settings": LATENCY_SETTINGS,
              "window_seconds": args.window_seconds, "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print("\nactivation → write-back COMPLETE (seconds)")
    print(f"{'mode':<10}{'samples':>8}{'p50':>8}{'p95':>8}{'max':>8}")
    for r in results:
        print(f"{r['mode']:<10}{r['samples']:>8}{r['p50_s']:>8}{r['p95_s']:>8}{r['max_s']:>8}")
    for r in results:
        print(f"\n{r['mode']}: mean seconds per step of a run (the first run, the initial load, left out)")
        for step, seconds in r["mean_seconds_per_step"].items():
            print(f"  {step:<52}{seconds:>7.2f}")
    print(f"\n(events mode settings: {LATENCY_SETTINGS}; written to {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
