"""The Configuration tab: the config in effect, where each key and connection comes from, and a
warning where an environment variable hides what Admin → Variables / Connections stored."""

from __future__ import annotations

import json

import pytest

from salesforce_orders_ui.config_in_effect import read_config_in_effect


@pytest.fixture
def metadata_db(airflow_home, monkeypatch):
    """The tests' metadata DB with nothing of the import's in it, nor in the environment; removes what a test stored."""
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    for name in ("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", "AIRFLOW_CONN_SALESFORCE_DEFAULT", "AIRFLOW_CONN_ORDERS_WAREHOUSE"):
        monkeypatch.delenv(name, raising=False)

    def clean() -> None:
        with create_session() as session:
            session.query(Variable).filter(Variable.key == "salesforce_orders_config").delete()
            session.query(Connection).filter(Connection.conn_id.in_(["salesforce_default", "orders_warehouse"])).delete()

    def store(variable: dict | None = None, **connections: dict) -> None:
        with create_session() as session:
            if variable is not None:
                session.add(Variable(key="salesforce_orders_config", val=json.dumps(variable)))
            for conn_id, conn in connections.items():
                session.add(Connection(conn_id=conn_id, **conn))

    clean()
    yield store
    clean()


def test_stored_values_are_shown_with_their_source_and_defaults_as_defaults(metadata_db):
    metadata_db({"max_invalid_share": 0.4, "notifications": {"no_success_after_minutes": 30}},
                orders_warehouse={"conn_type": "sqlite", "host": "/data/warehouse.db"})
    found = read_config_in_effect()
    settings = {s.key: s for s in found.settings}
    assert (settings["max_invalid_share"].value, settings["max_invalid_share"].source) == ("0.4", "the Variable")
    assert settings["notifications.no_success_after_minutes"].source == "the Variable"
    assert (settings["lookback_days"].source, settings["warehouse_conn_id"].value) == ("default", '"orders_warehouse"')
    origins = {o.name: o for o in found.origins}
    assert origins["salesforce_orders_config"].source.startswith("metadata DB")
    assert origins["orders_warehouse"].source.startswith("metadata DB") and origins["orders_warehouse"].summary == "sqlite /data/warehouse.db"
    assert origins["salesforce_default"].source == "missing"
    assert found.warnings == []


def test_an_environment_variable_hiding_a_stored_variable_or_connection_is_warned_about(metadata_db, monkeypatch, allowed, external_orders_pages):
    metadata_db({"max_invalid_share": 0.4}, salesforce_default={"conn_type": "salesforce", "host": "https://stored.example.com"})
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({"max_invalid_share": 0.1}))
    monkeypatch.setenv("AIRFLOW_CONN_SALESFORCE_DEFAULT", json.dumps({"conn_type": "salesforce", "host": "https://env.example.com",
                                                                      "password": "s3cret-in-env"}))
    found = read_config_in_effect()
    assert {s.key: s.value for s in found.settings}["max_invalid_share"] == "0.1"  # what Airflow gives the import
    assert [o.name for o in found.origins if o.shadowed] == ["salesforce_orders_config", "salesforce_default"]
    assert len(found.warnings) == 2 and "AIRFLOW_CONN_SALESFORCE_DEFAULT" in found.warnings[1]
    assert "edits in Admin → Variables are accepted but ignored" in found.warnings[0]

    page = external_orders_pages(problem="no warehouse needed for this tab").get("/config").text
    assert page.count('class="notice problems shadowed"') == 2
    assert "environment variable AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG" in page and "hides the stored one" in page
    assert "https://env.example.com" in page and "s3cret-in-env" not in page


def test_an_invalid_variable_is_said_with_the_imports_message(metadata_db, allowed, external_orders_pages):
    metadata_db({"lookback_days": "a fortnight"})
    page = external_orders_pages(problem="-").get("/config").text
    assert 'id="config-problem"' in page and "lookback_days" in page


def test_the_local_stack_stores_its_config_where_admin_edits_it_and_keeps_the_edits(metadata_db, sandbox):
    """``make up``'s settings: in the metadata DB (no environment variable hides them), added once."""
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    from salesforce_orders_local.airflow_env import store_in_metadata_db
    from salesforce_orders_local.standalone import local_settings

    assert sorted(store_in_metadata_db(*local_settings(sandbox))) == [
        "connection orders_warehouse", "connection salesforce_default", "variable salesforce_orders_config",
    ]
    found = read_config_in_effect()
    assert {o.name: o.source for o in found.origins} == {
        "salesforce_orders_config": "metadata DB (Admin → Variables / Connections)",
        "salesforce_default": "metadata DB (Admin → Variables / Connections)",
        "orders_warehouse": "metadata DB (Admin → Variables / Connections)",
    }
    assert found.warnings == [] and found.problem is None

    # On-call raises max_invalid_share in Admin → Variables; the next `make up` keeps it, and the import reads it.
    with create_session() as session:
        session.query(VariableModel).filter(VariableModel.key == "salesforce_orders_config").one().val = json.dumps(
            {"enabled": True, "max_invalid_share": 0.4}
        )
    assert store_in_metadata_db(*local_settings(sandbox)) == []
    assert VariableModel.get("salesforce_orders_config", deserialize_json=True) == {"enabled": True, "max_invalid_share": 0.4}
    assert {s.key: s.source for s in read_config_in_effect().settings}["max_invalid_share"] == "the Variable"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgres://etl:9876/Xy+z@db.example.com:5432/orders", "postgres db.example.com:5432"),  # a "/" in the password
        ("postgres://etl:Sup3r#Secret@db.example.com/orders", "postgres db.example.com"),  # a "#": no port to cast
        ("postgres://etl:a:b@[::1]:5432/orders", "postgres [::1]:5432"),
        ("sqlite:////var/lib/warehouse.db", "sqlite"),
    ],
)
def test_a_connection_uri_with_an_unencoded_password_shows_its_host_never_a_piece_of_the_password(uri, shown):
    """The /config page summarises an AIRFLOW_CONN_* URI by its type, host and port, read from
    after the last "@": a password written without URL-encoding is never taken for a port nor
    quoted in an error."""
    from salesforce_orders_ui.config_in_effect import _connection_summary, _env_connection

    summary = _connection_summary(_env_connection(uri))
    assert summary == shown
    assert "9876" not in summary and "Sup3r" not in summary
