"""Fault points: inert unless a test names them, loud about unknown names, and each action does what it says."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from salesforce_orders import faultpoints
from salesforce_orders.faultpoints import DIR_ENV, ENV, FaultPointReached, parse, reach


def test_a_point_does_nothing_when_no_test_named_it(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    for name in faultpoints.POINTS:
        assert reach(name) is None


def test_an_unknown_point_in_the_code_is_an_error_even_when_nothing_is_active(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ValueError, match="unknown fault point 'load.befor_commit'"):
        reach("load.befor_commit")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("load.befor_commit=pause", r"unknown fault point 'load.befor_commit'; the points are .*load.before_commit"),
        ("load.before_commit=explode", r"load.before_commit: unknown action 'explode'; the actions are pause, raise, kill"),
        ("load.before_commit=raise@second", r"'@second' must be a positive whole number"),
    ],
)
def test_a_bad_variable_is_an_error_naming_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse(spec)


def test_the_variable_names_points_actions_and_arrivals():
    rules = parse("load.before_commit=raise; write_back.sent=kill@3,extract.page_staged")
    assert {name: (rule.action, rule.on_hit) for name, rule in rules.items()} == {
        "load.before_commit": ("raise", 1),
        "write_back.sent": ("kill", 3),
        "extract.page_staged": ("pause", 1),
    }


def test_raise_acts_on_the_named_arrival_only_and_announces_it(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "load.committed=raise@2")
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    reach("load.committed")  # the first arrival passes
    reach("load.before_commit")  # another point is not active
    assert not (tmp_path / "load.committed.reached").exists()
    with pytest.raises(FaultPointReached, match="fault point load.committed reached"):
        reach("load.committed")
    assert (tmp_path / "load.committed.reached").read_text().isdigit()
    reach("load.committed")  # only the second arrival


def test_pause_waits_for_the_test_to_resume_it(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "write_back.sent=pause")
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    passed = threading.Event()

    def stage() -> None:
        reach("write_back.sent")
        passed.set()

    worker = threading.Thread(target=stage)
    worker.start()
    reached = tmp_path / "write_back.sent.reached"
    while not reached.exists():
        worker.join(timeout=0.02)
    assert not passed.is_set()  # announced, and still there
    (tmp_path / "write_back.sent.resume").touch()
    worker.join(timeout=60)
    assert passed.is_set()


def test_kill_ends_the_process_outright(tmp_path):
    program = "from salesforce_orders.faultpoints import reach\nreach('load.orders_written')\nprint('went on')\n"
    env = {**_env(), ENV: "load.orders_written=kill", DIR_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    assert "went on" not in done.stdout
    assert "FAULT POINT REACHED: load.orders_written" in done.stderr
    assert (Path(tmp_path) / "load.orders_written.reached").exists()


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
