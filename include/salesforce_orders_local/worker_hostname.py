"""The host name a Celery worker of the one-host layout reports for the tasks it runs.

Airflow records ``hostname_callable()`` on each task instance. Workers on separate machines
differ by their machines' names; two workers on one host would all report that host, so each
is given a name (``SALESFORCE_ORDERS_WORKER_NAME``) and reports its Celery node name,
``<name>@<host>``: the task instance then says which worker ran it.
"""

from __future__ import annotations

import os
import socket

WORKER_NAME_ENV = "SALESFORCE_ORDERS_WORKER_NAME"


def node_name(worker_name: str) -> str:
    """The Celery node name of worker ``worker_name`` on this host (what ``-H <name>@%h`` gives)."""
    return f"{worker_name}@{socket.gethostname()}"


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for the one-host workers."""
    name = os.environ.get(WORKER_NAME_ENV)
    return node_name(name) if name else socket.getfqdn()
