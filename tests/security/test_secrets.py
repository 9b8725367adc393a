"""Passwords, security tokens and session tokens never appear in the task logs.

A full DAG run logs in with username, password and security token; its session expires half-way
through the extract, so the hook logs in again and holds a second session token. None of them
appears in the run's logs, and Airflow's secret masker (which redacts every task log line) knows
each of them, so a line that quoted one would show ``***`` instead.
"""

from __future__ import annotations

from typing import Any


def masked_in_task_logs(secret: str) -> bool:
    """Whether a task log line quoting ``secret`` comes out of Airflow's masking processor without it."""
    from airflow.sdk.log import mask_logs

    line = mask_logs(None, "info", {"event": f"value is {secret}!"})["event"]
    return secret not in line and "***" in line


def record_sessions(org: Any, monkeypatch) -> list[str]:
    """Every session token the org issues from now on."""
    sessions = org.runtime.auth.sessions
    issued: list[str] = []
    issue = sessions.issue

    def recorded() -> str:
        issued.append(issue())
        return issued[-1]

    monkeypatch.setattr(sessions, "issue", recorded)
    return issued


def test_passwords_and_tokens_never_reach_the_task_logs(wired_import, capfd, caplog, monkeypatch):
    org = wired_import.org
    credentials = org.credentials
    issued = record_sessions(org, monkeypatch)
    org.admin.set_faults(session_expires_after=1)  # the extract's second call finds its session expired

    capfd.readouterr()
    dag_run = wired_import.run_dag()
    out, err = capfd.readouterr()

    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    assert org.admin.stats()["faults_injected"]["invalid_session"] == 1
    # one login per task that talks to Salesforce, and one more after the expiry
    assert len(issued) == 4
    logs = out + err + caplog.text  # the task logs, whichever way logging is routed in this process
    assert "Salesforce orders import" in logs
    secrets = {"password": credentials["password"], "security token": credentials["security_token"]}
    secrets.update({f"session {i}": token for i, token in enumerate(issued)})
    for what, secret in secrets.items():
        assert secret not in logs, f"the {what} is in the task logs"
        assert masked_in_task_logs(secret), f"Airflow's masker does not know the {what}"


def test_a_direct_session_from_the_connection_is_masked(wired_import):
    """A connection in direct mode (instance URL + session id extra) holds a token as well."""
    from salesforce_orders.salesforce import SalesforceOrdersHook

    org = wired_import.org
    connection = org.airflow_connection()
    connection["extra"]["session_id"] = org.credentials["session_id"]
    del connection["password"]
    wired_import.set_connection("salesforce_direct", connection)

    hook = SalesforceOrdersHook("salesforce_direct")
    assert hook.conn.session_id == org.credentials["session_id"]
    assert masked_in_task_logs(org.credentials["session_id"])


def test_a_refused_login_names_the_connection_not_the_password(wired_import):
    import pytest
    from airflow.sdk.exceptions import AirflowFailException

    from salesforce_orders import stages

    connection = wired_import.org.airflow_connection()
    connection["password"] = "Wr0ng-Passw0rd-Typed-In"
    wired_import.set_connection("salesforce_default", connection)

    with pytest.raises(AirflowFailException) as refused:
        stages.extract(
            run_id="manual__refused", dag_run_id="manual__refused", run_type="manual",
            data_interval_start=None, data_interval_end=None, params={},
        )
    message = str(refused.value)
    assert "Salesforce refused the login of Airflow connection 'salesforce_default'" in message
    assert "INVALID_LOGIN" in message
    assert "Wr0ng-Passw0rd-Typed-In" not in message
