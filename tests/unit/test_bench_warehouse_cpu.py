"""``make bench``'s reading of the PostgreSQL server's CPU, which shows the warehouse's share of a
run's work (and so the floor of its wall time on the machine's cores)."""

from __future__ import annotations

import psutil
import sqlalchemy as sa

from salesforce_orders_local.bench import warehouse_cpu_meter
from tests.conftest import POSTGRES_URL


def test_the_server_s_cpu_grows_with_work_done_on_a_connection_that_has_ended(postgres_engine: sa.Engine) -> None:
    used = warehouse_cpu_meter(POSTGRES_URL)
    assert used is not None, "the test server runs on this machine: its processes can be read"
    before = used()
    engine = sa.create_engine(POSTGRES_URL)
    with engine.connect() as conn:  # a backend of its own, which ends before the second reading
        backend = psutil.Process(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        conn.execute(sa.text("SELECT count(*) FROM generate_series(1, 3000000) AS n WHERE n % 7 = 3")).scalar_one()
    engine.dispose()
    backend.wait(timeout=60)  # gone: the postmaster has reaped it
    assert used() - before > 0.05  # the ended backend's time counts, through the postmaster's children


def test_a_server_that_cannot_be_reached_has_no_meter() -> None:
    assert warehouse_cpu_meter("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1") is None
