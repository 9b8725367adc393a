"""An org without multi-currency, as most orgs are: its records have no ``CurrencyIsoCode`` and it
has no ``CurrencyType``; selecting either is refused. The import reads the org's one currency
(``Organization.DefaultCurrencyIsoCode``, in the call that reads the rates) and imports every
order in it, on the REST and the Bulk path, the orders of renamed Accounts included."""

from __future__ import annotations

from decimal import Decimal

import pytest


@pytest.mark.parametrize("path", ["rest", "bulk"])
def test_an_org_without_multi_currency_is_imported_in_its_one_currency(pipeline, org_size, path):
    p = pipeline
    orders, seed = org_size
    p.org.admin.reset(orders=orders, seed=seed, multi_currency=False)
    assert p.org.store.schema.get("CurrencyType") is None and p.org.store.schema.get("Order").field("CurrencyIsoCode") is None
    p.set_config(bulk_threshold=0 if path == "bulk" else 10**6)

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["path"] == path
    assert p.loaded_ids() == p.expected_order_ids() - p.quarantined_ids() and p.loaded_ids()
    rows = p.query("SELECT currency, corporate_currency, conversion_rate, total_amount, corporate_amount FROM external_orders")
    assert {(r["currency"], r["corporate_currency"]) for r in rows} == {("USD", "USD")}
    assert all(Decimal(str(r["conversion_rate"])) == 1 and r["corporate_amount"] == r["total_amount"] for r in rows)
    assert p.scalar("SELECT COUNT(*) AS n FROM currency_rates") == 0
    assert {r["currency"] for r in p.query("SELECT DISTINCT currency FROM products")} == {"USD"}
    # an analyst's roll-up: one currency, every order of the customer in it
    assert {r["currency"] for r in p.query("SELECT DISTINCT currency FROM v_orders_by_customer WHERE currency IS NOT NULL")} == {"USD"}
    assert p.scalar("SELECT COUNT(*) AS n FROM external_orders WHERE lifecycle_state <> 'COMPLETE'") == 0

    # An Account renamed in Salesforce brings its orders into the next run: read in the same currency.
    (order,) = p.query("SELECT sf_order_id, sf_account_id FROM external_orders ORDER BY sf_order_id LIMIT 1")
    p.org_update("Account", order["sf_account_id"], Name="Renamed Single Currency Ltd")

    again = p.run()

    assert again.succeeded, again.error
    assert again.results["extract"]["accounts_changed"] == 1
    renamed = p.query("SELECT account_name, currency FROM external_orders WHERE sf_account_id = :a", a=order["sf_account_id"])
    assert renamed and {(r["account_name"], r["currency"]) for r in renamed} == {("Renamed Single Currency Ltd", "USD")}


def test_a_multi_currency_org_keeps_each_orders_own_currency(sqlite_pipeline):
    """The same org with multi-currency (the sandbox's default): the orders' currencies as Salesforce has them."""
    run = sqlite_pipeline.run()

    assert run.succeeded, run.error
    currencies = {r["currency"] for r in sqlite_pipeline.query("SELECT DISTINCT currency FROM external_orders")}
    assert len(currencies) > 1 and "USD" in currencies
    assert sqlite_pipeline.scalar("SELECT COUNT(*) AS n FROM currency_rates") > 0



def test_a_multi_currency_org_whose_rates_cannot_be_read_fails_the_run_rather_than_adding_up_currencies(sqlite_pipeline):
    """Whether amounts need converting is what the Orders say (a ``CurrencyIsoCode``), not whether
    the integration user can read ``CurrencyType``: without the rates, a run would store every order
    as if in the org's one currency and an analyst's roll-up would add euros to dollars. The run
    fails at the extract, naming what to grant, and loads nothing; once the user can read the rates,
    the next run converts every order."""
    p = sqlite_pipeline
    p.org.admin.set_faults(unreadable_objects=["CurrencyType"])

    failed = p.run()

    assert failed.failed_stage == "extract"
    assert "multi-currency" in str(failed.error) and "read access to CurrencyType" in str(failed.error)
    assert p.loaded_ids() == set()

    p.org.admin.set_faults(unreadable_objects=[])
    run = p.run()

    assert run.succeeded, run.error
    rows = p.query("SELECT currency, corporate_currency, conversion_rate FROM external_orders")
    assert len({r["currency"] for r in rows}) > 1 and {r["corporate_currency"] for r in rows} == {"USD"}
    assert any(Decimal(str(r["conversion_rate"])) != 1 for r in rows)


def test_a_multi_currency_org_without_dated_rates_converts_with_the_current_rates(sqlite_pipeline):
    """Multi-currency without advanced currency management has no ``DatedConversionRate`` to read:
    each order is converted with its currency's current rate (``CurrencyType``)."""
    p = sqlite_pipeline
    p.org.admin.set_faults(unreadable_objects=["DatedConversionRate"])
    current = {r["IsoCode"]: Decimal(str(r["ConversionRate"])) for r in p.org_rows('SELECT IsoCode, ConversionRate FROM "CurrencyType"')}

    run = p.run()

    assert run.succeeded, run.error
    assert {r["source"] for r in p.query("SELECT DISTINCT source FROM currency_rates")} == {"CurrencyType"}
    rows = p.query("SELECT currency, conversion_rate FROM external_orders")
    assert len({r["currency"] for r in rows}) > 1
    assert all(Decimal(str(r["conversion_rate"])) == current[r["currency"]] for r in rows)
