"""``make up``: ``airflow standalone`` with the sandbox, the connections and the Variable preset in
its metadata DB (Admin → Connections / Variables), where edits take effect.

The UI listens on http://localhost:8080 (``airflow standalone`` prints the admin password). The
sandbox serves on https://localhost:8443 with the demo org kept in ``.local/sandbox``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .airflow_env import configure, ensure_pool, sqlite_warehouse_connection, store_in_metadata_db
from .demo import STATE_DIR
from .demo import start_sandbox as _start


def local_settings(server: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The connections and Variables of the local stack. They go into the metadata DB, not the
    environment: an environment variable would hide what Admin → Variables / Connections edit."""
    connections = {
        "salesforce_default": server.airflow_connection(),
        "orders_warehouse": sqlite_warehouse_connection(STATE_DIR / "warehouse.db"),
    }
    # The demo imports on Order change events too (off by default elsewhere).
    return connections, {"salesforce_orders_config": {"enabled": True, "events": {"enabled": True}}}


def standalone_env(port: int) -> dict[str, str]:
    """The settings ``airflow standalone`` gets: its API on ``port``, and the tasks told to reach
    the execution API there too (Airflow's default is port 8080, whatever the API listens on)."""
    return {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        # `airflow standalone` starts its components as `airflow ...` commands: the venv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8080, help="Airflow UI port")
    parser.add_argument("--sandbox-port", type=int, default=8443)
    args = parser.parse_args(argv)

    server = _start(STATE_DIR, args.orders, args.seed, port=args.sandbox_port)
    configure(STATE_DIR / "airflow", standalone_env(args.port))
    ensure_pool()
    for added in store_in_metadata_db(*local_settings(server)):
        print(f"Stored {added} in the metadata DB (edit it under Admin)", flush=True)
    print(f"Sandbox: {server.url} (CA {server.ca_path}); Airflow UI: http://localhost:{args.port}", flush=True)
    try:
        return subprocess.call([sys.executable, "-m", "airflow", "standalone"], env={**os.environ})
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
