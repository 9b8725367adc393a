"""``make bench``: the import pipeline against a generated org, measured stage by stage.

For each org size (default 10k and 100k Activated orders, ~3 products each) it generates the
org in the sandbox, runs every stage of the DAG in its own process (as an Airflow worker runs
each task; the mapped transform's partitions side by side, a process each) against a PostgreSQL
warehouse, and records wall time, records/s, peak RSS, API calls, the task's CPU time and the
sandbox's (what the stand-in for Salesforce took of the same cores) per stage, and API calls against the theoretical minimum (reads: one call per 2,000 REST
records or per Bulk result page; writes: one call per 200 records). At the largest size it
then does the same work the way the provider's documentation suggests — ``SalesforceHook
.make_query`` → DataFrame → ``to_sql``, then one update call per record — and prints the ratios.
After each import it runs the next run's extract: what it reads again is the echo of our own
write-back (``echo_reread_share``). A realistic-latency mode (``--latency-ms``, on by default at
150 ms, and ``--bulk-job-delay-s``) then runs the pipeline and the baseline again with the
sandbox answering as slowly as a real org. It also times the DAG file's parse. Results are
printed and written as JSON.

    python -m salesforce_orders_local.bench --sizes 10000 100000 --output bench-results/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .airflow_env import (
    DAGS_FOLDER,
    PROJECT_ROOT,
    configure,
    connection_env,
    postgres_warehouse_connection,
    variable_env,
)

STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "report")
REST_PAGE = 2000
COLLECTION = 200
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter carries over the
    parent's high-water mark through fork and exec, which would charge the sandbox to the task."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warehouse_cpu_meter(pg_url: str) -> Callable[[], float] | None:
    """A reader of the CPU seconds the PostgreSQL server has used so far, or None when it does not
    run on this machine (its processes cannot be read here).

    The server's live processes and, through its postmaster's children times, the backends that
    have ended: each task's connections end with it. The whole server's work is counted, so the
    figures are the import's only with nothing else using the server."""
    import psutil
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            backend = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        postmaster = psutil.Process(backend).parent()
        if postmaster is None or "postgres" not in postmaster.name():
            return None
    except (psutil.Error, sa.exc.SQLAlchemyError):
        return None  # elsewhere (another host, a container), or not ours to read
    finally:
        engine.dispose()

    def used() -> float:
        own = postmaster.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in postmaster.children():
            with contextlib.suppress(psutil.Error):  # it ended between the listing and the reading
                times = child.cpu_times()
                total += times.user + times.system
        return total

    return used


# ---- one stage in its own process ---------------------------------------------------------


def run_stage_in_process(name: str, kwargs: dict[str, Any]) -> None:
    """Entry point of the child process: run one stage, print one JSON line with its figures."""
    started = time.perf_counter()
    # What a worker process loads before the task's work starts: timed apart from the work.
    import pandas  # noqa: F401
    import sqlalchemy  # noqa: F401

    from salesforce_orders import stages
    from salesforce_orders.config import load_config

    load_config()
    if name == "validate":
        import great_expectations  # noqa: F401
    imported = time.perf_counter() - started
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    profiler = None
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    if name == "report":
        result = stages.report(run_id=kwargs["run_id"], results=kwargs["results"])
    else:
        result = getattr(stages, name)(**kwargs)
    cpu = time.process_time() - cpu_started  # every thread of the task
    if profiler is not None:
        profiler.disable()
        instance = f"-{kwargs['partition']['start'] or 'first'}" if kwargs.get("partition") else ""  # a mapped stage's
        profiler.dump_stats(str(Path(profile_dir) / f"{kwargs['run_id'].split('__')[1]}-{name}{instance}.prof"))
    figures = {"result": result, "seconds": time.perf_counter() - started, "cpu_seconds": cpu, "import_seconds": imported, "peak_rss_mb": _peak_rss_mb()}
    print("BENCH " + json.dumps(figures, default=str))


def _children(arg_lists: list[list[str]], env: dict[str, str]) -> list[dict[str, Any]]:
    """Child processes started together, each's figures once all have ended. Their output goes to
    files, not pipes: a child never waits on a full pipe while another one is being read."""
    with contextlib.ExitStack() as files:
        started = []
        for args in arg_lists:
            out, err = (files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            command = [sys.executable, "-m", "salesforce_orders_local.bench", *args]
            started.append((args, subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True), out, err))
        figures = []
        for args, proc, out, err in started:
            proc.wait()
            out.seek(0)
            lines = [line for line in out.read().splitlines() if line.startswith("BENCH ")]
            if not lines:
                err.seek(0)
                raise RuntimeError(f"{args[:2]} failed:\n{err.read()[-4000:]}")
            figures.append(json.loads(lines[-1][6:]))
        return figures


def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    (figures,) = _children([args], env)
    return figures


def run_stage(name: str, kwargs: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return _child(["--stage", name, "--kwargs", json.dumps(kwargs, default=str)], env)


def run_mapped_stage(name: str, kwargs: dict[str, Any], partitions: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """A mapped stage as Airflow runs it: one process per partition, side by side. Its seconds are
    the slowest instance's (they start together), its CPU seconds all of theirs; its result the
    instances' results combined, as the DAG's report combines them."""
    from salesforce_orders.partitions import combine_results

    args = [["--stage", name, "--kwargs", json.dumps({**kwargs, "partition": p}, default=str)] for p in partitions]
    instances = _children(args, env)
    return {
        "result": combine_results([i["result"] for i in instances]),
        "seconds": max(i["seconds"] for i in instances),
        "cpu_seconds": sum(i["cpu_seconds"] for i in instances),
        "import_seconds": max(i["import_seconds"] for i in instances),
        "peak_rss_mb": max(i["peak_rss_mb"] for i in instances),
        "instances": len(instances),
    }


# ---- the pipeline at one size ---------------------------------------------------------------


def _outbox_counts(pg_url: str, schema: str) -> dict[str, int]:
    import sqlalchemy as sa

    from salesforce_orders.warehouse.definitions import tables

    outbox = tables(schema).writeback_outbox
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(outbox.c.sf_object, sa.func.count()).group_by(outbox.c.sf_object))
        counts = {r[0]: r[1] for r in rows}
    engine.dispose()
    return counts


def _drop_schema(pg_url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


def start_org(orders: int, state: Path, *, reseed: bool = False) -> Any:
    """The benchmark's org: ``orders`` Activated orders (1% dirty), kept in ``state`` between uses."""
    from salesforce_sandbox.server import SandboxServer

    server = SandboxServer(
        port=0,
        db_path=str(state / f"org-{orders}.db"),
        orders=orders,
        seed=7,
        state_dir=state,
        daily_api_limit=10_000_000,
        generator_options={"activated_share": 1.0, "dirty_share": 0.01},
        reseed=reseed,
    )
    return server.start()


def bench_size(
    orders: int,
    pg_url: str,
    state: Path,
    base_env: dict[str, str],
    faults: dict[str, int] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The import's stages at ``orders``, then the next run's extract (what our write-back's echo
    costs it). ``faults``: the sandbox's latency switches (the realistic-latency mode); ``config``:
    keys of the import's Variable to set (``--config``)."""
    from sqlalchemy.engine import make_url

    generated = time.perf_counter()
    server = start_org(orders, state, reseed=True)  # the org before any write-back
    generated = time.perf_counter() - generated
    schema = f"bench_{orders}_{uuid.uuid4().hex[:6]}"
    url = make_url(pg_url)
    env = {
        **base_env,
        **connection_env("salesforce_default", server.airflow_connection()),
        **connection_env("orders_warehouse", postgres_warehouse_connection(url.host, url.port or 5432, url.database, url.username, url.password)),
        **variable_env("salesforce_orders_config", {**(config or {}), "warehouse_schema": schema, "api_budget_share": 1.0}),
    }
    run_id = f"bench__{orders}__{uuid.uuid4().hex[:6]}"
    figures: dict[str, Any] = {}
    results: dict[str, Any] = {}
    warehouse_cpu = warehouse_cpu_meter(pg_url)
    try:
        server.admin.reset_stats()
        if faults:
            server.admin.set_faults(**faults)
        for name in STAGES:
            kwargs: dict[str, Any] = {"run_id": run_id}
            if name == "extract":
                kwargs.update(dag_run_id=run_id, run_type="manual", data_interval_start=None, data_interval_end=None, params={})
            elif name == "transform":  # mapped over the validate's partitions
                kwargs["instance_url"] = results["extract"]["instance_url"]
            elif name == "load":
                kwargs["max_system_modstamp"] = results["extract"]["max_system_modstamp"]
                kwargs["window"] = results["extract"]["window"]
            elif name == "mark_status_changes":
                kwargs["window"] = results["extract"]["window"]
            elif name == "report":
                kwargs["results"] = {k: v for k, v in results.items()}
            # The sandbox serves from a thread of this process: its CPU time is this process's.
            sandbox_cpu = time.process_time()
            server_cpu = warehouse_cpu() if warehouse_cpu else None
            if name == "transform":
                out = run_mapped_stage(name, kwargs, results["validate"]["transform_partitions"], env)
            else:
                out = run_stage(name, kwargs, env)
            sandbox_cpu = time.process_time() - sandbox_cpu
            if server_cpu is not None:
                server_cpu = warehouse_cpu() - server_cpu
            results[name] = out["result"]
            figures[name] = {
                "seconds": round(out["seconds"], 2),
                "cpu_seconds": round(out["cpu_seconds"], 2),
                "sandbox_cpu_seconds": round(sandbox_cpu, 2),
                "warehouse_cpu_seconds": None if server_cpu is None else round(server_cpu, 2),
                "import_seconds": round(out["import_seconds"], 2),
                "peak_rss_mb": round(out["peak_rss_mb"], 1),
                # the report's api_calls is the run's total, not its own
                "api_calls": 0 if name == "report" else out["result"].get("api_calls", 0),
                **({"instances": out["instances"]} if "instances" in out else {}),
            }
        stats = server.admin.stats()
        outbox = _outbox_counts(pg_url, schema)
        # The next run, as a scheduled one would start it (no overlap: only what changed since the
        # import's last stamp): whatever it extracts is the echo of our own write-back.
        next_run = f"bench__{orders}next__{uuid.uuid4().hex[:6]}"
        next_config = {**(config or {}), "warehouse_schema": schema, "api_budget_share": 1.0, "overlap_minutes": 0}
        next_env = {**env, **variable_env("salesforce_orders_config", next_config)}
        echo = run_stage(
            "extract",
            {"run_id": next_run, "dag_run_id": next_run, "run_type": "manual", "data_interval_start": None, "data_interval_end": None, "params": {}},
            next_env,
        )
    finally:
        server.stop()
        _drop_schema(pg_url, schema)

    extract = results["extract"]
    records = {
        "extract": extract["extracted"] + extract["items"],
        "validate": results["validate"]["checked"],
        "transform": results["transform"]["transformed"],
        "load": results["load"]["inserted"] + results["load"]["updated"] + results["load"]["unchanged"],
        "write_back": results["write_back"].get("attempted", 0),
    }
    for name, count in records.items():
        seconds = figures[name]["seconds"]
        figures[name]["records"] = count
        figures[name]["records_per_second"] = round(count / seconds) if seconds else None
    read_min = extract["pages"] if extract["path"] == "bulk" else math.ceil(extract["extracted"] / REST_PAGE)
    write_min = sum(math.ceil(n / COLLECTION) for n in outbox.values())
    figures["extract"]["api_min"] = read_min
    figures["write_back"]["api_min"] = write_min
    total_calls = sum(f["api_calls"] for f in figures.values())
    cpu = {
        "tasks": round(sum(f["cpu_seconds"] for f in figures.values()), 1),
        "sandbox": round(sum(f["sandbox_cpu_seconds"] for f in figures.values()), 1),
        "warehouse": None if warehouse_cpu is None else round(sum(f["warehouse_cpu_seconds"] for f in figures.values()), 1),
    }
    return {
        "orders": orders,
        "items": extract["items"],
        "generate_seconds": round(generated, 1),
        "extract_path": extract["path"],
        "stages": figures,
        "end_to_end_seconds": round(sum(f["seconds"] for f in figures.values()), 1),
        "process_start_seconds": round(sum(f["import_seconds"] for f in figures.values()), 1),
        # What the run's work took of the machine's cores: the tasks, the stand-in for Salesforce and
        # the warehouse. No schedule of this work on these cores ends sooner than their sum over the cores.
        "cpu_seconds": cpu,
        "cpu_per_order_ms": round(cpu["tasks"] * 1000 / orders, 3),
        "work_floor_seconds": None if cpu["warehouse"] is None else round(sum(cpu.values()) / (os.cpu_count() or 1), 1),
        "peak_rss_mb_max": max(f["peak_rss_mb"] for f in figures.values()),
        "api_calls": total_calls,
        "api_calls_min": read_min + write_min,
        "api_ratio": round(total_calls / (read_min + write_min), 3) if read_min + write_min else None,
        "sandbox_calls_by_kind": stats.get("calls"),
        "quarantined": results["validate"]["invalid"],
        # orders the next run reads again because of our own write-back, as a share of the import
        "echo_reread_share": round(echo["result"]["extracted"] / max(results["load"]["inserted"], 1), 5),
        "next_run_extract": {
            "extracted": echo["result"]["extracted"],
            "seconds": round(echo["seconds"], 2),
            "api_calls": echo["result"]["api_calls"],
        },
        **({"faults": faults} if faults else {}),
    }


# ---- the provider-documented way ----------------------------------------------------------


def run_baseline_in_process(kwargs: dict[str, Any]) -> None:
    """Child process: make_query -> DataFrame -> to_sql, then one update call per record (sampled)."""
    import pandas as pd
    import sqlalchemy as sa
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

    from salesforce_orders.config import parse_config
    from salesforce_orders.runs import plan_run
    from salesforce_orders.salesforce import SalesforceOrdersHook
    from salesforce_orders.soql import build_orders_query

    ours = SalesforceOrdersHook("salesforce_default")
    extras = ours.get_connection("salesforce_default").extra_dejson
    session = ours._build_session(extras)  # only to reach the sandbox: the provider hook is used as is
    calls = {"n": 0}
    session.hooks["response"].append(lambda r, *a, **k: calls.__setitem__("n", calls["n"] + 1))
    hook = SalesforceHook(salesforce_conn_id="salesforce_default", session=session)
    config = parse_config({})
    from datetime import UTC, datetime

    plan = plan_run(run_type="manual", data_interval_start=None, data_interval_end=None, params={}, watermark=None, now=datetime.now(UTC), config=config)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    result = hook.make_query(build_orders_query(config, plan.window))
    records = result["records"]
    frame = pd.json_normalize(records, sep=".")
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (list, dict))).any():
            frame[column] = frame[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    engine = sa.create_engine(kwargs["pg_url"])
    frame.to_sql("baseline_orders", engine, schema=kwargs["schema"], if_exists="replace", index=False, chunksize=2000)
    engine.dispose()
    timings["read_and_load_seconds"] = time.perf_counter() - started
    read_calls = calls["n"]
    sample = [r["Id"] for r in records[: kwargs["sample_writes"]]]
    started = time.perf_counter()
    for order_id in sample:
        hook.get_conn().Order.update(order_id, {"Status": "Imported"})
    write_seconds = time.perf_counter() - started
    print(
        "BENCH "
        + json.dumps(
            {
                "orders": len(records),
                "read_and_load_seconds": round(timings["read_and_load_seconds"], 2),
                "read_calls": read_calls,
                "sampled_writes": len(sample),
                "sampled_write_seconds": round(write_seconds, 2),
                "peak_rss_mb": round(_peak_rss_mb(), 1),
            }
        )
    )


def bench_baseline(
    orders: int, pg_url: str, state: Path, base_env: dict[str, str], sample_writes: int, ours: dict[str, Any], faults: dict[str, int] | None = None
) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    server = start_org(orders, state, reseed=True)  # the org as it was before our write-back
    if faults:
        server.admin.set_faults(**faults)
    schema = f"bench_base_{uuid.uuid4().hex[:6]}"
    url = make_url(pg_url)
    env = {**base_env, **connection_env("salesforce_default", server.airflow_connection())}
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    engine.dispose()
    try:
        out = _child(["--baseline", json.dumps({"pg_url": url.render_as_string(hide_password=False), "schema": schema, "sample_writes": sample_writes})], env)
    finally:
        server.stop()
        _drop_schema(pg_url, schema)
    # one update call per record: the orders and (as ours does) their accounts
    records_to_write = ours["stages"]["write_back"]["records"]
    per_write = out["sampled_write_seconds"] / max(out["sampled_writes"], 1)
    write_seconds = per_write * records_to_write
    total = out["read_and_load_seconds"] + write_seconds
    ours_total = ours["end_to_end_seconds"]
    return {
        **out,
        "write_calls": records_to_write,
        "write_seconds_extrapolated": round(write_seconds, 1),
        "end_to_end_seconds": round(total, 1),
        "api_calls": out["read_calls"] + records_to_write,
        "speedup": round(total / ours_total, 1) if ours_total else None,
        "write_call_ratio": round(ours["stages"]["write_back"]["api_calls"] / records_to_write, 4) if records_to_write else None,
    }


# ---- DAG parse time -------------------------------------------------------------------------


def bench_parse(env: dict[str, str]) -> dict[str, Any]:
    dag_file = DAGS_FOLDER / "salesforce_orders_import.py"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(dag_file)], env=env, check=True)
    whole = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import airflow.sdk"], env=env, check=True)
    airflow_import = time.perf_counter() - started
    code = (
        "import time; import airflow.sdk; from airflow.dag_processing.dagbag import DagBag; "
        f"t = time.perf_counter(); b = DagBag(dag_folder={str(dag_file)!r}); "
        "assert not b.import_errors, b.import_errors; print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return {
        "python_dag_file_seconds": round(whole, 2),
        "python_import_airflow_sdk_seconds": round(airflow_import, 2),
        "dag_file_parse_seconds_in_dag_processor": round(float(out.stdout.strip().splitlines()[-1]), 3),
    }


# ---- report -------------------------------------------------------------------------------------


def print_summary(report: dict[str, Any]) -> None:
    for run in report["runs"]:
        print(f"\n{run['orders']:,} orders, {run['items']:,} items ({run['extract_path'].upper()} extraction), PostgreSQL warehouse")
        print(f"  {'stage':<20}{'seconds':>9}{'records/s':>12}{'peak RSS MB':>13}{'API calls':>11}{'min':>6}{'imports s':>11}"
              f"{'task CPU s':>12}{'sandbox CPU s':>15}{'warehouse CPU s':>17}")
        for name, f in run["stages"].items():
            rate = f.get("records_per_second") or ""
            label = f"{name} x{f['instances']}" if f.get("instances", 1) > 1 else name  # a mapped stage's processes
            print(
                f"  {label:<20}{f['seconds']:>9}{rate!s:>12}{f['peak_rss_mb']:>13}{f['api_calls']:>11}"
                f"{f.get('api_min', ''):>6}{f['import_seconds']:>11}{f['cpu_seconds']:>12}{f['sandbox_cpu_seconds']:>15}"
                f"{f.get('warehouse_cpu_seconds')!s:>17}"
            )
        print(f"  end to end {run['end_to_end_seconds']} s (+ {run['process_start_seconds']} s of per-task imports); "
              f"peak RSS of any stage {run['peak_rss_mb_max']} MB; "
              f"API calls {run['api_calls']} vs minimum {run['api_calls_min']} (x{run['api_ratio']}); quarantined {run['quarantined']}")
        cpu = run["cpu_seconds"]
        print(f"  CPU: tasks {cpu['tasks']} s ({run['cpu_per_order_ms']} ms an order), sandbox {cpu['sandbox']} s, "
              f"warehouse {cpu['warehouse']} s", end="")
        if run["work_floor_seconds"] is not None:
            print(f": on {report['machine']['cpus']} cores, no run of this work ends in less than {run['work_floor_seconds']} s", end="")
        print()
    base = report.get("baseline")
    if base:
        print(f"\nProvider-documented way at {base['orders']:,} orders (make_query -> DataFrame -> to_sql, one update per record):")
        print(f"  read + load {base['read_and_load_seconds']} s, {base['read_calls']} read calls, peak RSS {base['peak_rss_mb']} MB")
        print(f"  writes: {base['write_calls']:,} calls, {base['write_seconds_extrapolated']} s (extrapolated from {base['sampled_writes']} timed calls)")
        print(f"  end to end {base['end_to_end_seconds']} s -> this pipeline is {base['speedup']}x faster; "
              f"write-back calls {base['write_call_ratio']} of the per-record way")
    for run in report["runs"]:
        nxt = run["next_run_extract"]
        print(f"\nNext run after the {run['orders']:,}-order import: {nxt['extracted']} orders read again "
              f"(echo_reread_share {run['echo_reread_share']}), {nxt['api_calls']} API calls, {nxt['seconds']} s")
    real = report.get("realistic")
    if real:
        ours, base = real["pipeline"], real["baseline"]
        print(f"\nRealistic latency ({real['faults']['latency_ms']} ms a call, {real['faults']['bulk_job_delay_ms'] / 1000:g} s a Bulk job) "
              f"at {ours['orders']:,} orders:")
        print(f"  pipeline end to end {ours['end_to_end_seconds']} s ({ours['api_calls']} API calls); "
              f"per-record baseline {base['end_to_end_seconds']} s (writes extrapolated from {base['sampled_writes']} timed calls) "
              f"-> {base['speedup']}x")
    p = report["parse"]
    print(f"\nDAG parse: {p['dag_file_parse_seconds_in_dag_processor']} s in a DAG processor (Airflow already imported); "
          f"`python dags/salesforce_orders_import.py` {p['python_dag_file_seconds']} s, of which importing airflow.sdk {p['python_import_airflow_sdk_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="org sizes (Activated orders)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--sample-writes", type=int, default=3000, help="per-record update calls timed for the baseline")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--latency-ms", type=int, default=150, help="realistic mode: added to every API call (0: no realistic mode)")
    parser.add_argument("--bulk-job-delay-s", type=float, default=10.0, help="realistic mode: added to every Bulk job's processing")
    parser.add_argument("--realistic-size", type=int, default=None, help="realistic mode's org size (default: the largest size)")
    parser.add_argument("--realistic-sample-writes", type=int, default=100, help="per-record update calls timed for the realistic baseline")
    parser.add_argument(
        "--config", type=json.loads, default={}, metavar="JSON",
        help='keys of the import\'s Variable for the pipeline runs, e.g. \'{"transform_partitions": 1}\'',
    )
    parser.add_argument("--profile", metavar="DIR", help="write a cProfile file per stage and size into DIR (slows the stages)")
    parser.add_argument("--output", default=str(PROJECT_ROOT / "bench-results" / "bench.json"))
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        run_stage_in_process(args.stage, json.loads(args.kwargs))
        return 0
    if args.baseline:
        run_baseline_in_process(json.loads(args.baseline))
        return 0

    state = Path(tempfile.mkdtemp(prefix="orders-bench-"))
    base_env = {**os.environ, **configure(PROJECT_ROOT / ".local" / "airflow-bench", {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})}
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        base_env["BENCH_PROFILE_DIR"] = str(Path(args.profile).resolve())
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": [],
    }
    for size in args.sizes:
        print(f"Benchmarking {size:,} orders ...", flush=True)
        report["runs"].append(bench_size(size, args.pg_url, state, base_env, config=args.config))
    if not args.no_baseline:
        largest = max(report["runs"], key=lambda r: r["orders"])
        print(f"Baseline at {largest['orders']:,} orders ...", flush=True)
        report["baseline"] = bench_baseline(largest["orders"], args.pg_url, state, base_env, args.sample_writes, largest)
    if args.latency_ms:
        size = args.realistic_size or max(args.sizes)
        faults = {"latency_ms": args.latency_ms, "bulk_job_delay_ms": int(args.bulk_job_delay_s * 1000)}
        print(f"Realistic latency at {size:,} orders ({faults}) ...", flush=True)
        ours = bench_size(size, args.pg_url, state, base_env, faults, config=args.config)
        base = bench_baseline(size, args.pg_url, state, base_env, args.realistic_sample_writes, ours, faults)
        report["realistic"] = {"faults": faults, "pipeline": ours, "baseline": base}
    report["parse"] = bench_parse(base_env)
    print_summary(report)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\nResults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
