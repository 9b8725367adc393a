"""Named fault points: where the crash tests stop, fail or kill a stage (test-only).

A stage marks the moments its crash recovery is about with ``reach("load.before_commit")``. In
production nothing is configured and a point is one dictionary lookup. A test activates points
for a process through the environment (never set it in a deployment)::

    SALESFORCE_ORDERS_FAULTPOINTS="load.before_commit=pause"          # one point
    SALESFORCE_ORDERS_FAULTPOINTS="extract.page_staged=kill@2;..."     # the second time it is reached
    SALESFORCE_ORDERS_FAULTPOINT_DIR=/tmp/points                       # where arrivals are announced

Actions:

- ``pause``: announce the arrival, then wait until the test resumes the point (or kills the
  process, which is what the crash tests do: the state at the kill is exactly the point's);
- ``raise``: announce, then raise :class:`FaultPointReached` (an ordinary task failure);
- ``kill``: announce, then ``SIGKILL`` the process itself (no handler, no clean-up runs).

An arrival is announced by creating ``<dir>/<point>.reached`` (holding the pid) and by a line on
stderr, so a test waits for an event, never for time to pass. ``<dir>/<point>.resume`` lets a
paused process go on. Unknown point names are an error, in the code and in the variable alike.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

ENV = "SALESFORCE_ORDERS_FAULTPOINTS"
DIR_ENV = "SALESFORCE_ORDERS_FAULTPOINT_DIR"

POINTS = {
    "extract.page_staged": "a page of orders is staged (committed), the next page not yet asked for",
    "load.orders_written": "the load's transaction has written a batch of orders, nothing committed",
    "load.before_commit": "the load's transaction has written every order, outbox row and the watermark, not committed",
    "load.committed": "the load has committed, nothing written back yet",
    "write_back.before_send": "a batch is marked PROCESSING (committed), the Salesforce call not made yet",
    "write_back.sent": "Salesforce has answered a batch, its outcomes not yet recorded",
    "mark_status_changes.before_commit": "status changes are written, not committed",
}
ACTIONS = ("pause", "raise", "kill")
_RESUME_POLL_SECONDS = 0.05


class FaultPointReached(RuntimeError):
    """Raised at a point whose action is ``raise``."""


@dataclass(frozen=True)
class _Rule:
    action: str
    on_hit: int  # act on this arrival (1 = the first)


def parse(spec: str) -> dict[str, _Rule]:
    """``name=action[@n];...`` as rules by point; a bad name or action is an error naming it."""
    rules: dict[str, _Rule] = {}
    for part in filter(None, (p.strip() for p in spec.replace(",", ";").split(";"))):
        name, _, rest = part.partition("=")
        action, _, hit = (rest or "pause").partition("@")
        name, action = name.strip(), action.strip()
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown fault point {name!r}; the points are {', '.join(sorted(POINTS))}")
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: {name}: unknown action {action!r}; the actions are {', '.join(ACTIONS)}")
        if hit and not hit.strip().isdigit():
            raise ValueError(f"{ENV}: {name}: '@{hit}' must be a positive whole number")
        rules[name] = _Rule(action, int(hit) if hit else 1)
    return rules


_parsed: tuple[str, dict[str, _Rule]] = ("", {})
_hits: dict[str, int] = {}
_lock = threading.Lock()


def _rules() -> dict[str, _Rule]:
    global _parsed
    spec = os.environ.get(ENV, "")
    if spec != _parsed[0]:
        _parsed = (spec, parse(spec))
        _hits.clear()
    return _parsed[1]


def reach(name: str) -> None:
    """The stage is at point ``name``: act if a test asked for it, else nothing."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}")
    if not os.environ.get(ENV):
        return
    rule = _rules().get(name)
    if rule is None:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] != rule.on_hit:
            return
    _announce(name)
    if rule.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if rule.action == "raise":
        raise FaultPointReached(f"fault point {name} reached ({POINTS[name]})")
    _wait_for_resume(name)


def _directory() -> Path | None:
    value = os.environ.get(DIR_ENV)
    return Path(value) if value else None


def _announce(name: str) -> None:
    print(f"FAULT POINT REACHED: {name} (pid {os.getpid()})", file=sys.stderr, flush=True)
    directory = _directory()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        # written whole, then renamed: a test that sees the file reads the pid, never an empty file
        partial = directory / f".{name}.reached.{os.getpid()}"
        partial.write_text(str(os.getpid()))
        partial.replace(directory / f"{name}.reached")


def _wait_for_resume(name: str) -> None:
    directory = _directory()
    resume = directory / f"{name}.resume" if directory else None
    stop = threading.Event()
    while not (resume is not None and resume.exists()):
        stop.wait(_RESUME_POLL_SECONDS)  # waits for the test's signal, not for time to pass


__all__ = ["ACTIONS", "DIR_ENV", "ENV", "POINTS", "FaultPointReached", "parse", "reach"]
