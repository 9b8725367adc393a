"""Third-party Salesforce clients, installed on first use under the worktree's ``.local/clients/``.

Each one is pinned and installed once (Python clients into their own virtualenv with uv, jsforce
with npm); later runs reuse the installation. A client that cannot be installed fails its tests
with the installer's message: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENTS_DIR = REPO / ".local" / "clients"
INSTALL_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 600

TAP_SALESFORCE = "tap-salesforce==2.8.1"
AIRBYTE_SOURCE_SALESFORCE = "airbyte-source-salesforce==2.10.3"
JSFORCE = "jsforce@3.10.16"


def _install(target: Path, requirement: str, commands: list[list[str]]) -> Path:
    marker = target / ".installed"
    if marker.is_file() and marker.read_text() == requirement:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False)
        if done.returncode != 0:
            pytest.fail(f"installing {requirement} failed ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")
    marker.write_text(requirement)
    return target


def python_client(name: str, requirement: str) -> Path:
    """The virtualenv holding ``requirement``; returns its ``bin`` directory."""
    target = CLIENTS_DIR / name
    uv = Path(sys.executable).with_name("uv")
    python = target / "bin" / "python"
    if uv.is_file():
        commands = [
            [str(uv), "venv", "--quiet", "--python", sys.executable, str(target)],
            [str(uv), "pip", "install", "--quiet", "--python", str(python), requirement],
        ]
    else:
        commands = [
            [sys.executable, "-m", "venv", str(target)],
            [str(python), "-m", "pip", "install", "--quiet", requirement],
        ]
    return _install(target, requirement, commands) / "bin"


def node_client(name: str, package: str) -> Path:
    """A directory whose ``node_modules`` holds ``package``."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"installing {package} needs npm (Node.js 20), which is not on PATH")
    target = CLIENTS_DIR / name
    command = [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error", package]
    return _install(target, package, [command])


def run_client(command: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a client with the sandbox recipe's environment; a failure shows what the client said."""
    done = subprocess.run(
        command, env=os.environ | env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{command[0]} exited {done.returncode}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}")
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON messages of a Singer tap or an Airbyte source (their other lines are logs)."""
    messages = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
    return messages
