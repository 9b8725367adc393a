"""``python -m salesforce_sandbox``: serve prints a working connection; the admin subcommands talk to it."""

from __future__ import annotations

import json
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

STARTUP_SECONDS = 60


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "salesforce_sandbox", *args], capture_output=True, text=True, timeout=60, check=True
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """A ``serve`` subprocess; yields the printed ``KEY=value`` lines and the state directory."""
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "salesforce_sandbox", "serve", "--port", "0", "--orders", "50",
         "--state-dir", str(state_dir), "--proxy-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [output.put(line.rstrip("\n")) for line in process.stdout], daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while not lines or lines[-1] != "Press Ctrl-C to stop.":
            assert process.poll() is None, "serve exited early:\n" + "\n".join(lines)
            assert time.monotonic() < deadline, "serve did not start:\n" + "\n".join(lines)
            try:
                lines.append(output.get(timeout=1.0))
            except queue.Empty:
                continue
        printed = dict(line.split("=", 1) for line in lines if line.startswith(("AIRFLOW_CONN_", "  export ")))
        printed |= {key.strip(): value.strip() for key, _, value in
                    (line.partition(": ") for line in lines if line.startswith("  refresh_token: "))}
        yield printed, state_dir
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 0


def test_serve_prints_a_connection_that_works(served: tuple[dict[str, str], Path]):
    printed, state_dir = served
    (connection,) = shlex.split(printed["AIRFLOW_CONN_SALESFORCE_DEFAULT"])
    connection = json.loads(connection)
    extra = connection["extra"]
    assert connection["conn_type"] == "salesforce"
    assert extra["instance_url"] == extra["login_url"] and extra["instance_url"].startswith("https://localhost:")
    assert Path(extra["ca_bundle"]) == (state_dir / "sandbox-cert.pem").resolve()

    session = requests.Session()
    session.trust_env = False
    response = session.get(f"{extra['instance_url']}/services/data/", verify=extra["ca_bundle"])
    assert response.status_code == 200

    # the admin subcommands reach the same server
    url = extra["instance_url"]
    faults = json.loads(_run("faults", "latency_ms=5", "--url", url, "--state-dir", str(state_dir)).stdout)
    assert faults["latency_ms"] == 5
    stats = json.loads(_run("stats", "--url", url, "--state-dir", str(state_dir)).stdout)
    assert stats["api_usage"]["max"] == 15000


def test_serve_prints_the_proxy_recipe_for_clients_that_log_in_at_salesforce(served: tuple[dict[str, str], Path]):
    printed, state_dir = served
    env = {key.removeprefix("  export "): shlex.split(value)[0] for key, value in printed.items()
           if key.startswith("  export ")}
    assert env["REQUESTS_CA_BUNDLE"] == env["NODE_EXTRA_CA_CERTS"] == str((state_dir / "sandbox-cert.pem").resolve())
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    # What a connector does with that environment: the refresh-token grant at login.salesforce.com.
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"https": env["HTTPS_PROXY"]}
    session.verify = env["REQUESTS_CA_BUNDLE"]
    answer = session.post(
        "https://login.salesforce.com/services/oauth2/token",
        data={"grant_type": "refresh_token", "client_id": "3MVG9sandbox.local.consumer.key",
              "client_secret": "SANDBOX0CONSUMER0SECRET", "refresh_token": printed["refresh_token"]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["instance_url"].startswith("https://localhost:")
