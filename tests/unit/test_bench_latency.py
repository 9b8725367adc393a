"""``make bench-latency``'s own logic, without Airflow: which orders it activates, how it tells an
order the import refused, and that SIGTERM / SIGINT still run its cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from salesforce_orders_local.bench_latency import orders_to_activate, refused_orders

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class FewDrafts:
    def activatable_order_ids(self, limit: int) -> list[str]:
        return ["801A", "801B"][:limit]


def test_orders_to_activate_takes_as_many_as_asked() -> None:
    assert orders_to_activate(FewDrafts(), 1) == ["801A"]


def test_too_few_orders_to_activate_end_the_bench_before_it_starts_airflow() -> None:
    with pytest.raises(SystemExit, match="only 2 Draft orders .* not 3"):
        orders_to_activate(FewDrafts(), 3)


def test_refused_orders_are_the_quarantined_and_skipped_ones_not_released(created_warehouse) -> None:
    from salesforce_orders.warehouse import tables

    t = tables(created_warehouse.schema)
    quarantined = {"run_id": "run1", "failed_checks": ["service_address_complete"], "details": {},
                   "quarantined_at": NOW, "updated_at": NOW}
    skipped = {"run_id": "run1", "reason": "zero_total", "skipped_at": NOW, "updated_at": NOW}
    with created_warehouse.engine.begin() as conn:
        conn.execute(sa.insert(t.quarantined_orders), [
            {**quarantined, "sf_order_id": "801QUARANTINED", "released_at": None},
            {**quarantined, "sf_order_id": "801RELEASED", "released_at": NOW},
        ])
        conn.execute(sa.insert(t.skipped_orders), [{**skipped, "sf_order_id": "801SKIPPED"}])

    asked = ["801QUARANTINED", "801RELEASED", "801SKIPPED", "801WAITING"]
    assert refused_orders(created_warehouse.engine, created_warehouse.schema, asked) == {
        "801QUARANTINED": "quarantined (failed checks: service_address_complete)",
        "801SKIPPED": "skipped (zero_total)",
    }


# A bench in miniature: a component started in a process group of its own and undone by the same
# ExitStack callbacks as bench_mode's, under main's signal handling; it says when it is set up.
BENCH_IN_MINIATURE = textwrap.dedent("""
    import sys, time
    from contextlib import ExitStack
    from pathlib import Path
    from salesforce_orders_local import local_airflow

    work = Path(sys.argv[1])
    with local_airflow.cleanup_on_signals():
        with ExitStack() as cleanup:
            cleanup.callback((work / "cleaned").write_text, "yes")
            sleeper = local_airflow.Component(
                "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, work / "sleeper.log")
            sleeper.launch()
            cleanup.callback(local_airflow.stop, [sleeper], 30)
            (work / "started").write_text(str(sleeper.process.pid))
            time.sleep(600)
""")


def _wait_for(path: Path, process: subprocess.Popen) -> str:
    """The file's text once it exists (the process failing first fails the test)."""
    deadline = time.monotonic() + 120  # a safety net only
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_bench_runs_its_cleanup_and_stops_its_components(tmp_path: Path, signum: int) -> None:
    bench = subprocess.Popen([sys.executable, "-c", BENCH_IN_MINIATURE, str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sleeper_pid = int(_wait_for(tmp_path / "started", bench))
        bench.send_signal(signum)
        _, stderr = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signum, stderr
    assert f"{signal.Signals(signum).name}: stopping and cleaning up" in stderr
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert _gone(sleeper_pid)
