"""The DAG's task bodies: each reads the config, does one stage, returns a small summary for XCom.

XCom carries counts, the window and ids of the run only; record data moves through the
warehouse's staging tables (keyed by ``run_id``), so tasks may run on different workers.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

_STOPPED = (
    "The run stops here without retrying; what was committed stays. The watermark moves only with a "
    "successful load and unsent write-backs stay in the outbox, so the next run picks up the rest."
)


# What Salesforce answers while it is down or being maintained; the hook retries these first.
OUTAGE_STATUSES = frozenset({502, 503, 504})


class SalesforceUnavailable(RuntimeError):
    """Salesforce did not answer (down, unreachable or too slow); Airflow retries the task."""


IMPORT_DISABLED = "Import disabled: 'enabled' is false in the salesforce_orders_config Variable"


def _now() -> datetime:
    return datetime.now(UTC)


def _config():
    from .config import load_config

    return load_config()


def _warehouse(config):
    """The warehouse engine, its schema brought to this code's version first (``schema_versions``)."""
    import sqlalchemy as sa
    from airflow.sdk.exceptions import AirflowFailException

    from .schema_versions import SchemaVersionError, create_all
    from .warehouse.engines import engine_from_connection
    from .warehouse.errors import WarehouseConnectionError

    engine = engine_from_connection(config.warehouse_conn_id)
    named = f"The warehouse (Airflow connection {config.warehouse_conn_id!r}, {engine.url.render_as_string(hide_password=True)})"
    try:
        create_all(engine, config.warehouse_schema)  # the first statements: fail before anything else is done
    except sa.exc.OperationalError as exc:
        # A server that is down or a file that cannot be opened: name the connection; Airflow retries.
        raise WarehouseConnectionError(f"{named} cannot be used: {str(exc.orig).strip()}") from None
    except SchemaVersionError as exc:
        # Behind with no right to upgrade, newer than this code, not a warehouse: retrying cannot help.
        raise AirflowFailException(f"{named}: {exc}") from None
    return engine


def _refresh_statistics(engine, *table_names: str, schema: str | None, columns: Mapping[str, Sequence[str]] | None = None) -> None:
    """After a stage's bulk writes: fresh planner statistics for the next stages' reads
    (``columns``: by table, the only columns analyzed, see warehouse.analyze)."""
    from .warehouse.definitions import tables
    from .warehouse.writes import analyze

    t = tables(schema)
    with engine.begin() as conn:
        analyze(conn, *(getattr(t, name) for name in table_names), columns=columns)


def _hook(config, api_budget_left: int | None = None, *, run_id: str | None = None, engine=None):
    """The stage's hook, with what is left of the run's API budget (``run_id``: and the run's
    ceiling on the org's usage, which counts the calls of the stage's failed tries too)."""
    from .report import keep_api_usage_ceiling
    from .salesforce import SalesforceOrdersHook

    # Our calls name the import as their client: the change events of its own writes say so in
    # changeOrigin, and the event trigger ignores them (no run started by our own write-back).
    hook = SalesforceOrdersHook(config.salesforce_conn_id, client_name=config.events.echo_client)
    ceiling = keep_api_usage_ceiling(engine, run_id, None, schema=config.warehouse_schema) if run_id is not None else None
    hook.limit_calls(api_budget_left, ceiling)
    return hook


# The cyclic garbage collector's default first threshold (700 allocations) makes it run tens of
# thousands of times over a large run, though the records a stage builds are freed by reference
# counting: 7-14 % of the transform and load of 100k orders. Collected less often while a stage runs.
_STAGE_GC_THRESHOLD = (50_000, 20, 100)
# The transform and the load make no reference cycles either, and each of their batches (records,
# rows) grows the live objects by some 300k before they are freed: at the stage threshold that
# still meant two collections a batch, finding nothing, some 12 % of the load's CPU and 6 % of the
# transform's. Above a batch's growth, a collection comes only when objects really pile up.
_BATCH_GC_THRESHOLD = (1_000_000, 20, 100)


def _collecting_garbage(threshold: tuple[int, int, int]) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """A stage run with the garbage collector's ``threshold``, the one before restored after."""

    def decorate(stage: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(stage)
        def run(**kwargs: Any) -> dict[str, Any]:
            before = gc.get_threshold()
            gc.set_threshold(*threshold)
            try:
                return stage(**kwargs)
            finally:
                gc.set_threshold(*before)

        run.gc_threshold = threshold  # type: ignore[attr-defined]
        return run

    return decorate


_collects_garbage_less_often = _collecting_garbage(_STAGE_GC_THRESHOLD)


def _records_failure(stage: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A failed try of a stage is noted on the run's ``import_runs`` row (stage, one-line reason,
    tries), so the runs table says where and why; a skip is not a failure. Noting it is best-effort:
    a warehouse that cannot be reached cannot take the note, and the task's own error stands."""

    @functools.wraps(stage)
    def run(**kwargs: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        try:
            return stage(**kwargs)
        except AirflowSkipException:
            raise
        except Exception as exc:
            _note_failure(kwargs["run_id"], stage.__name__, exc)
            raise

    return run


def _note_failure(run_id: str, stage_name: str, error: BaseException) -> None:
    from .report import record_failure
    from .warehouse.engines import engine_from_connection

    try:
        config = _config()
        engine = engine_from_connection(config.warehouse_conn_id)
        try:
            record_failure(engine, run_id=run_id, stage=stage_name, error=error, schema=config.warehouse_schema)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the stage's own error is what the task reports
        log.warning("%s: could not note the failure on import_runs (%s)", stage_name, type(exc).__name__)


def _reports_warehouse_errors(stage: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A statement the warehouse refused as a short message naming the connection and the table and
    saying what to do (``warehouse.errors``), not SQLAlchemy's long text; its shape is logged.

    A missing privilege fails without retries (it fails the same way until someone grants it);
    the rest (read-only server, duplicate key, locks, the unexpected) is retried by Airflow.
    """

    @functools.wraps(stage)
    def run(**kwargs: Any) -> dict[str, Any]:
        import sqlalchemy as sa
        from airflow.sdk.exceptions import AirflowFailException

        from .warehouse.errors import explain

        try:
            return stage(**kwargs)
        except sa.exc.DBAPIError as exc:
            error = explain(exc, _config().warehouse_conn_id, stage=stage.__name__)
            log.error("%s: the warehouse statement that failed (values not shown): %s", stage.__name__, error.statement)
            if not error.retry:
                raise AirflowFailException(str(error)) from None
            raise error.with_traceback(exc.__traceback__) from None  # where it failed, without the raw text

    return run


def _talks_to_salesforce(stage: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Salesforce failures as messages that say what happened and what the next run does.

    The daily allowance (REQUEST_LIMIT_EXCEEDED), the run's API budget and a refused login stop the
    run without retries: retrying within minutes cannot help, and repeated failed logins can lock the
    user out. So does a query naming something the org does not have, or a reserved word: the
    message names the configuration key that put it there. A Salesforce that is down or too slow
    is retried by Airflow.
    """

    @functools.wraps(stage)
    def run(**kwargs: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException
        from requests import RequestException
        from simple_salesforce.exceptions import SalesforceAuthenticationFailed

        from .salesforce import ApiBudgetExceeded, ApiLimitExceeded, LoginRefused, SalesforceApiError
        from .soql import QUERY_NAME_ERRORS

        name = stage.__name__
        try:
            return stage(**kwargs)
        except ApiLimitExceeded as exc:
            raise AirflowFailException(f"{name}: Salesforce's daily API allowance is used up ({exc}). {_STOPPED}") from None
        except ApiBudgetExceeded as exc:
            raise AirflowFailException(
                f"{name}: {exc} (api_budget_share: the share of the remaining daily allowance one run may use). {_STOPPED}"
            ) from None
        except (LoginRefused, SalesforceAuthenticationFailed) as exc:
            conn_id = _config().salesforce_conn_id
            raise AirflowFailException(f"{name}: Salesforce refused the login of Airflow connection {conn_id!r}: {exc}") from None
        except RequestException as exc:
            conn_id = _config().salesforce_conn_id
            raise SalesforceUnavailable(f"{name}: Salesforce (Airflow connection {conn_id!r}) did not answer: {exc}") from exc
        except SalesforceApiError as exc:
            if exc.status in OUTAGE_STATUSES:  # still 502/503/504 after the hook's own retries: an outage
                conn_id = _config().salesforce_conn_id
                raise SalesforceUnavailable(f"{name}: Salesforce (Airflow connection {conn_id!r}) did not answer: {exc}") from exc
            if exc.code not in QUERY_NAME_ERRORS:
                raise
            raise AirflowFailException(f"{name}: {_refused_name_message(exc, _config())}") from None

    return run


def _refused_name_message(exc, config) -> str:
    """A query Salesforce refused for a name in it, said with the configuration key that put it there."""
    from .config import VARIABLE_NAME
    from .soql import refused_name

    refused = refused_name(exc.detail or str(exc), config)
    told = f"Salesforce refused the query ({exc.code}: {refused.reason})"
    if not refused.keys:
        return (
            f"{told}. {refused.name!r} is a name the import always reads: check that the org has it and that the "
            "integration user may see it (field-level security). Not retried."
        )
    keys = " and ".join(refused.keys)
    return (
        f"{told}. {keys} in the {VARIABLE_NAME} Variable name{'s' if len(refused.keys) == 1 else ''} {refused.name!r}, "
        "which this org does not accept there: a field, object or relationship it does not have (or the integration "
        "user may not see), or a SOQL reserved word. Fix the key, then clear the task. Not retried."
    )


@_records_failure
@_reports_warehouse_errors
@_collects_garbage_less_often
@_talks_to_salesforce
def extract(
    *,
    run_id: str,
    dag_run_id: str,
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Plan the run's window and stream its orders into staging."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from . import currencies
    from .config import ConfigError
    from .extract import extract_bulk, extract_rest
    from .load import get_watermark
    from .report import keep_api_usage_ceiling, start_run
    from .runs import ParamError, plan_run
    from .soql import build_count_query, build_items_query, build_orders_bulk_query, build_orders_query
    from .staging import clear_run

    try:
        config = _config()
        if not config.enabled:
            raise AirflowSkipException(IMPORT_DISABLED)
        engine = _warehouse(config)
        plan = plan_run(
            run_type=run_type,
            data_interval_start=data_interval_start,
            data_interval_end=data_interval_end,
            params=params,
            watermark=get_watermark(engine, config.warehouse_schema),
            now=_now(),
            config=config,
        )
    except (ConfigError, ParamError) as exc:
        raise AirflowFailException(str(exc)) from None  # retrying cannot fix a bad config or param
    log.info("Run %s: mode %s, window %s", run_id, plan.mode, plan.as_dict())
    if plan.note:
        log.warning("Run %s: %s", run_id, plan.note)
    plan = _without_own_writes(engine, plan, config.warehouse_schema)
    start_run(engine, run_id=run_id, dag_run_id=dag_run_id, run_type=run_type, plan=plan, schema=config.warehouse_schema)
    with engine.begin() as conn:
        clear_run(conn, run_id, schema=config.warehouse_schema)
    hook = _hook(config)
    # Before the first query: a window without an end moves the watermark no later than this
    # (runs.watermark_reached), as a result set fixed now misses the orders changed from now on.
    read_from = _now()
    # The currency rates and the org's currency are read in the count's call (Composite): one call for the four queries.
    expected, rate_pages = hook.count_and_read(build_count_query(config, plan.window), currencies.queries())
    hook.set_budget_share(config.api_budget_share)  # from the count's Sforce-Limit-Info: no extra call
    # The budget is the first try's: a retry spends what the failed try left, as the org counts it.
    hook.limit_calls(None, keep_api_usage_ceiling(engine, run_id, hook.usage.ceiling, schema=config.warehouse_schema))
    currency = _read_currency_rates(engine, hook, config, rate_pages)
    path = "bulk" if expected > config.bulk_threshold else "rest"
    log.info("%d orders to extract: using the %s API (bulk_threshold %d)", expected, path.upper(), config.bulk_threshold)
    if path == "bulk":
        summary = extract_bulk(
            engine,
            hook,
            run_id,
            build_orders_bulk_query(config, plan.window, multi_currency=currency.multi_currency),
            build_items_query(config, plan.window),
            schema=config.warehouse_schema,
            fresh=True,  # the run's staging was cleared above
            order_currency=currency.single_currency,
        )
    else:
        summary = extract_rest(
            engine,
            hook,
            run_id,
            build_orders_query(config, plan.window, multi_currency=currency.multi_currency),
            items_relationship=config.order_items_relationship,
            page_size=config.extract_page_size,
            schema=config.warehouse_schema,
            fresh=True,
            order_currency=currency.single_currency,
        )
    changed_account_ids: set[str] = set()
    if plan.moves_watermark and plan.covered_from is not None:
        changed_account_ids = _extract_orders_of_changed_accounts(engine, hook, config, plan, run_id, summary, currency)
    _store_ancestors(engine, hook, config, summary.parent_account_ids | changed_account_ids, summary)
    log.info("Extracted %d orders with %d items in %d pages (%d API calls)", summary.orders, summary.items, summary.pages, hook.usage.calls)
    summary.log_masked()
    _refresh_statistics(engine, "stg_orders", "stg_order_items", schema=config.warehouse_schema)
    return {
        "run_id": run_id,
        "instance_url": hook.instance_url,
        # (and when its reading began, for the watermark, and ended, by the clock that stamps
        # import_runs.started_at: a later run's version of an order is never replaced by this
        # one's, see load._read_after)
        "window": {**plan.as_dict(), "read_from": read_from.isoformat(), "read_until": datetime.now(UTC).isoformat()},
        "path": path,
        **summary.as_dict(),
        "api_calls": hook.usage.calls,
        "api_budget_left": hook.usage.budget_left,  # the rest of the run's budget, for the later stages
        "not_found": _asked_for_and_not_found(engine, run_id, plan.window, config.warehouse_schema, events=run_type == "asset_triggered"),
    }


def _asked_for_and_not_found(engine, run_id: str, window, schema: str | None, *, events: bool) -> list[str]:
    """Of the orders a re-sync asked for (by number or Id), those no Activated order of the lookback
    matched: said in the log (a typo, an order number without its leading zeros, a Draft order),
    never a silent run that re-synced nothing. (An event run's orders are those that changed: one
    set back to Draft is no surprise there.)"""
    from .api_names import case_safe_id
    from .staging import staged_order_numbers

    asked = window.order_numbers or (() if events else window.order_ids)
    if not asked:
        return []
    staged = staged_order_numbers(engine, run_id, schema=schema)
    if window.order_numbers:
        found = set(staged.values())
        missing = [number for number in asked if number not in found]
    else:
        # Salesforce returns 18-character Ids; one asked for may be the 15-character form, named as typed.
        missing = [order_id for order_id in asked if case_safe_id(order_id) not in staged]
    if missing:
        log.warning(
            "Re-sync: %d of the %d orders asked for matched no Activated order in the lookback (check the numbers, "
            "with their leading zeros, or the Ids): %s%s",
            len(missing), len(asked), ", ".join(missing[:20]), " ..." if len(missing) > 20 else "",
        )
    return missing[:100]


def _imported_already(engine, schema: str | None, order_ids: list[str]) -> set[str]:
    """Of ``order_ids``, the orders the warehouse holds as active (loaded, still Activated)."""
    from .warehouse.definitions import tables
    from .warehouse.writes import select_in

    if not order_ids:
        return set()
    o = tables(schema).external_orders
    with engine.connect() as conn:
        return {row.sf_order_id for row in select_in(conn, o, [o.c.sf_order_id], o.c.sf_order_id, order_ids, o.c.sf_state == "active")}


def _without_own_writes(engine, plan, schema: str | None):
    """A window over changes (incremental, backfill) leaves out the orders whose only change since
    they were read is our own write-back (``own_writes``): no second extraction of an import."""
    import dataclasses

    from .own_writes import current
    from .warehouse.definitions import tables

    if plan.window.changed_from is None:
        return plan
    spans = current(engine, tables(schema).sync_state)
    return dataclasses.replace(plan, window=dataclasses.replace(plan.window, own_writes=spans)) if spans else plan


def _read_currency_rates(engine, hook, config, pages):
    """The org's currency rates, read once a run (``pages``: of ``currencies.queries()``), for the
    transform's corporate amounts; returns whether the org has multi-currency, and if not its
    one currency (:class:`currencies.OrgCurrency`). Whether it has is what its Orders say (a
    ``CurrencyIsoCode``), not whether the rates could be read: a multi-currency org whose rates
    the integration user cannot read fails the run (retrying cannot help) rather than adding up
    amounts of different currencies."""
    from airflow.sdk.exceptions import AirflowFailException

    from . import currencies
    from .warehouse.definitions import tables

    rows = currencies.read_from_salesforce(hook, pages)
    if currencies.orders_carry_currency(hook, pages):
        if not rows:
            raise AirflowFailException(
                "The org has multi-currency (its Orders carry CurrencyIsoCode) but its currency rates cannot be read "
                "(CurrencyType: no active currency, or INVALID_TYPE): without them, amounts in different currencies "
                "would be added up as one. Give the integration user read access to CurrencyType (and to "
                "DatedConversionRate with advanced currency management), then run again."
            )
        with engine.begin() as conn:
            currencies.store(conn, tables(config.warehouse_schema).currency_rates, rows, _now())
        log.info("Currency rates: %d read from the org", len(rows))
        return currencies.OrgCurrency(multi_currency=True)
    with engine.begin() as conn:
        currencies.store(conn, tables(config.warehouse_schema).currency_rates, [], _now())
    single = currencies.org_currency(hook, pages)
    log.info("The org has no multi-currency: every order's amounts are in its currency, %s", single)
    return currencies.OrgCurrency(multi_currency=False, single_currency=single)


# Orders of changed Accounts are read by AccountId, this many Accounts a query (a SOQL IN list).
_ACCOUNTS_PER_QUERY = 200


def _extract_orders_of_changed_accounts(engine, hook, config, plan, run_id: str, summary, currency) -> set[str]:
    """An Account edited in Salesforce (renamed, re-parented, a new address or customer id) does not
    touch its orders' SystemModstamp: the Accounts changed in the window are read by their own
    stamp, and the orders of those whose customer differs from the warehouse are staged too, so the
    usual stages update the customer and every one of its orders (account name, external name).
    Returns the changed Accounts' ids (an Account without orders is updated with the ancestors)."""
    from .extract import changed_accounts, count_staged, extract_rest
    from .soql import ExtractWindow, build_changed_accounts_query, build_orders_query
    from .warehouse.writes import in_batches

    schema = config.warehouse_schema
    accounts = changed_accounts(engine, hook, build_changed_accounts_query(config, plan.window), config, schema=schema)
    if not accounts:
        return set()
    log.info(
        "%d Accounts changed in Salesforce since %s; re-reading their orders: %s",
        len(accounts), plan.covered_from.isoformat(),
        "; ".join(f"{account_id} ({', '.join(what)})" for account_id, what in list(accounts.items())[:10]),
    )
    for chunk in in_batches(sorted(accounts), _ACCOUNTS_PER_QUERY):
        window = ExtractWindow(None, None, plan.window.activated_since, account_ids=chunk)
        more = extract_rest(
            engine, hook, run_id, build_orders_query(config, window, multi_currency=currency.multi_currency),
            items_relationship=config.order_items_relationship, page_size=config.extract_page_size, schema=schema,
            order_currency=currency.single_currency,
        )
        summary.pages += more.pages
        summary.api_calls += more.api_calls
        summary.card_data_masked |= more.card_data_masked
        summary.parent_account_ids |= more.parent_account_ids
    # An order of a changed Account may have been staged by the window already: counted once.
    summary.orders, summary.items = count_staged(engine, run_id, schema=schema)
    summary.accounts_changed = len(accounts)
    return set(accounts)


def _store_ancestors(engine, hook, config, account_ids: set[str], summary) -> None:
    """The whole ancestor chain of the run's parent accounts and changed Accounts, stored as
    customers, so the hierarchy (and the roll-up view) is right at any depth; see hierarchy."""
    from .hierarchy import read_ancestors, store_ancestors

    if not account_ids:
        return
    calls_before = hook.usage.calls
    accounts = read_ancestors(hook, config, account_ids)
    with engine.begin() as conn:
        written, summary.held_accounts = store_ancestors(conn, config, accounts, _now())
    summary.api_calls += hook.usage.calls - calls_before
    summary.ancestors = len(accounts)
    log.info("Account hierarchy: %d accounts read up to the top, %d customers written", len(accounts), written)


@_records_failure
@_reports_warehouse_errors
@_collects_garbage_less_often
def validate(*, run_id: str, held_accounts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Validate staged orders; quarantine the invalid; fail above the invalid-share threshold.
    ``held_accounts``: the Accounts the extract could not store, with why (its ``held_accounts``):
    the orders under them are quarantined too."""
    from airflow.sdk.exceptions import AirflowFailException

    from .quarantine import validate_run
    from .validate import InvalidShareExceeded

    config = _config()
    engine = _warehouse(config)
    try:
        summary = validate_run(engine, run_id, config, today=date.today(), held_accounts=held_accounts)
    except InvalidShareExceeded as exc:
        raise AirflowFailException(str(exc)) from None  # the same data fails the same way on retry
    _refresh_statistics(engine, "stg_orders", schema=config.warehouse_schema)  # the statuses the transform reads by
    return {"run_id": run_id, **summary.as_dict(), "transform_partitions": _transform_partitions(engine, run_id, config)}


def _transform_partitions(engine, run_id: str, config) -> list[dict[str, str | None]]:
    """The ranges of order ids the DAG's mapped ``transform`` instances take, one each (``partitions``)."""
    from .partitions import plan_partitions

    with engine.connect() as conn:
        ranges = plan_partitions(
            conn,
            run_id,
            partitions=config.transform_partitions,
            min_orders=config.transform_partition_min_orders,
            schema=config.warehouse_schema,
        )
    if len(ranges) > 1:
        log.info("The transform runs in %d partitions: %s", len(ranges), "; ".join(map(str, ranges)))
    return [r.as_dict() for r in ranges]


@_records_failure
@_reports_warehouse_errors
@_collecting_garbage(_BATCH_GC_THRESHOLD)
def transform(*, run_id: str, instance_url: str, partition: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Transform valid staged orders into warehouse records (pure functions), staged again; the
    card fields of the orders skipped are queued to be X-ed out.

    ``partition``: one range of order ids of the validate's ``transform_partitions`` (None: the
    whole run). Instances of other ranges may run at the same time: this one clears and writes
    only what its own range staged (its chunks, hence its batches, never reach past it), so a
    retry leaves theirs alone."""
    from . import currencies
    from .card_masks import queue_card_masks
    from .load import clear_skipped, record_skipped
    from .model import SkippedOrder
    from .partitions import OrderIdRange
    from .progress import Progress
    from .readahead import read_ahead
    from .staging import clear_transformed, iter_staged, stage_transformed
    from .transform import transform_order
    from .warehouse.definitions import tables
    from .warehouse.engines import SQLITE_WRITE_LOCK

    config = _config()
    engine = _warehouse(config)
    # SQLite: each write transaction waits for the write lock from its start (busy_timeout) rather
    # than failing at once when another instance wrote between its first read and its first write.
    writer = engine.execution_options(**{SQLITE_WRITE_LOCK: True})
    schema = config.warehouse_schema
    within = OrderIdRange.from_dict(partition)
    transformed = skipped = 0
    skipped_reasons: dict[str, int] = {}
    with writer.begin() as conn:
        clear_transformed(conn, run_id, within=within, schema=schema)
        clear_skipped(conn, run_id, within=within, schema=schema)
        rates = currencies.load(conn, tables(schema).currency_rates)
    progress = Progress("transform", "orders")
    staged = iter_staged(engine, run_id, status="valid", chunk_size=config.chunk_size, within=within, schema=schema)
    for chunk in read_ahead(staged):
        results = [transform_order(order, items, config, instance_url=instance_url, rates=rates) for order, items in chunk]
        loaded = _imported_already(engine, schema, [r.sf_order_id for r in results if isinstance(r, SkippedOrder)])
        if loaded:
            # An order imported before that now totals 0 is imported again, flagged is_zero_total:
            # skipped, the warehouse would keep its old version as Salesforce's current one (the
            # order in two places). The skip policy is for orders not imported yet.
            importing = config.model_copy(update={"zero_total_policy": "import"})
            results = [
                transform_order(order, items, importing, instance_url=instance_url, rates=rates)
                if isinstance(result, SkippedOrder) and result.sf_order_id in loaded
                else result
                for (order, items), result in zip(chunk, results, strict=True)
            ]
        records = [result for result in results if not isinstance(result, SkippedOrder)]
        skips: list[SkippedOrder] = [result for result in results if isinstance(result, SkippedOrder)]
        skipped_orders = {result.sf_order_id: result.sf_system_modstamp for result in skips}
        for result in skips:
            skipped_reasons[result.reason] = skipped_reasons.get(result.reason, 0) + 1
        with writer.begin() as conn:
            stage_transformed(conn, run_id, records, schema=schema)
            record_skipped(conn, run_id, skips, schema=schema, now=_now())
            queue_card_masks(
                conn,
                skipped_orders,
                card_fields=config.card_fields_to_x_out_when_not_imported,
                order_object=config.order_object,
                run_id=run_id,
                now=_now(),
                schema=schema,
            )
        skipped += len(skipped_orders)
        transformed += len(records)
        progress.add(len(chunk))
    progress.finish()
    _refresh_statistics(engine, "stg_transformed_batches", schema=schema)
    log.info("Transformed %d orders, skipped %d %s (%s)", transformed, skipped, skipped_reasons or "", within)
    return {"run_id": run_id, "transformed": transformed, "skipped": skipped, "skipped_reasons": skipped_reasons}


# Of what a load writes in bulk, what the write-back pages through and updates. (Children and
# customers are looked up key by key, which needs no statistics: see warehouse.select_in.)
_LOADED_TABLES = ("external_orders", "writeback_outbox")
# After the load and the write-back, the columns the next stages, the views and the retention
# purge select, join, group and order by:
# the planner needs the tables' new sizes and these; sampling every column of a 100k-order run
# (texts, addresses, JSON) took 1.7 s of the server's time for external_orders alone, these 0.35 s.
_LOADED_COLUMNS = {
    "external_orders": (
        "sf_order_id", "order_number", "customer_id", "location_id", "currency", "corporate_currency",
        "activated_at", "lifecycle_state", "sf_state", "sf_system_modstamp", "last_imported_at", "last_run_id",
        "updated_at",
    ),
    "writeback_outbox": (
        "id", "sf_object", "sf_record_id", "sf_order_id", "action", "shipment_key", "state", "attempts",
        "next_attempt_at", "created_run_id", "updated_run_id", "updated_at",
    ),
}


@_records_failure
@_reports_warehouse_errors
@_collecting_garbage(_BATCH_GC_THRESHOLD)
def load(*, run_id: str, max_system_modstamp: str | None, window: Mapping[str, Any]) -> dict[str, Any]:
    """Load the run's transformed orders in one transaction; outbox rows and watermark with them.

    ``window``: the extract's plan (``RunPlan.as_dict``). A re-sync of chosen orders leaves the
    watermark alone; other runs move it only over what they provably read (see runs.py)."""
    from airflow.sdk.exceptions import AirflowFailException

    from .load import StagingGone, load_run
    from .runs import parse_watermark, watermark_reached
    from .staging import has_staged, iter_transformed

    config = _config()
    engine = _warehouse(config)
    schema = config.warehouse_schema
    # A window with an end (scheduled, backfill) read everything changed before it, whether or not
    # anything changed: the mark moves with time, so quiet hours do not widen the next windows. It
    # moves to that end and no further: a version staged with a later stamp is an order of the window
    # edited while the extract paged (a page is read as it is then), and says nothing of the other
    # orders changed after the end, which this window never read. A window without an end moves it
    # no later than when its reading began, for the same reason.
    read_to = watermark_reached(window, max_system_modstamp)
    try:
        counts = load_run(
            engine,
            run_id,
            iter_transformed(engine, run_id, chunk_size=config.chunk_size, schema=schema, views=True),
            schema=schema,
            watermark=read_to,
            covered_from=parse_watermark(window.get("changed_from") or window.get("since")),
            card_fields=config.card_fields_to_x_out_when_not_imported,
            order_object=config.order_object,
            keep_history=config.history_mode,
            staging_gone=bool(max_system_modstamp) and not has_staged(engine, run_id, schema=schema),
            read_until=parse_watermark(window.get("read_until")),
        )
    except StagingGone:
        # (A load cleared days after its run failed, once a later run's report purged the staging.)
        raise AirflowFailException(
            f"Run {run_id}: its staged orders are gone (staging is kept retention_days, {config.retention_days} days, "
            "then purged). Nothing was loaded and the watermark was not moved: clear the whole run from extract, "
            "or trigger a new run; either reads these orders again."
        ) from None
    _refresh_statistics(engine, *_LOADED_TABLES, schema=schema, columns=_LOADED_COLUMNS)
    result = {"run_id": run_id, **counts.as_dict()}
    log.info("Loaded: %s", result)
    return result


@_records_failure
@_reports_warehouse_errors
@_talks_to_salesforce
def mark_status_changes(*, run_id: str, window: Mapping[str, Any], api_budget_left: int | None = None) -> dict[str, Any]:
    """Mark imported orders that went back to Draft or were deleted in Salesforce."""
    from .load import STATUS_CHECK_KEY, get_watermark
    from .load import mark_status_changes as mark
    from .runs import parse_watermark
    from .soql import build_status_changes_query

    config = _config()
    engine = _warehouse(config)
    schema = config.warehouse_schema
    loaded_to = get_watermark(engine, schema)  # read before the query: every change before it is in the answer
    since = parse_watermark(window.get("changed_from")) or parse_watermark(window.get("since"))
    if since is None:
        # first run or a full re-sync: look back as far as the watermark allows, else the lookback
        since = parse_watermark(loaded_to) or parse_watermark(window["activated_since"])
    checked = parse_watermark(get_watermark(engine, schema, key=STATUS_CHECK_KEY))
    if checked is not None:
        # Never later than where the last successful check got to: when a run failed before this
        # step, the next one still sees the orders set back to Draft or deleted in between.
        since = min(since, checked - timedelta(minutes=config.overlap_minutes))
    if (started := _run_started(engine, run_id, schema)) is not None:
        # Nor later than when this run's extract began reading: an order it read and loaded late
        # (a re-sync's cleared or waiting load) set back to Draft after it was read, while no check
        # could mark it (it was in no warehouse then), and the marks moved past that by other runs.
        since = min(since, started - timedelta(minutes=config.overlap_minutes))
    hook = _hook(config, api_budget_left, run_id=run_id, engine=engine)
    changes = []
    for page in hook.iter_query_pages(build_status_changes_query(config.order_object, since), include_deleted=True):
        changes.extend({k: r.get(k) for k in ("Id", "OrderNumber", "StatusCode", "IsDeleted", "SystemModstamp")} for r in page)
    stamps = [c["SystemModstamp"] for c in changes if c.get("SystemModstamp")]
    checked_to = max((s for s in (loaded_to, *stamps) if s), key=parse_watermark, default=None)
    marked = mark(
        engine,
        changes,
        run_id=run_id,
        schema=schema,
        checked_to=checked_to,
        card_fields=config.card_fields_to_x_out_when_not_imported,
        order_object=config.order_object,
    )
    log.info("%d orders changed status in Salesforce since %s; %d of them marked in the warehouse", len(changes), since, marked)
    return {
        "run_id": run_id,
        "status_changes_seen": len(changes),
        "deactivated": marked,
        "api_calls": hook.usage.calls,
        "api_budget_left": hook.usage.budget_left,
    }


def _run_started(engine, run_id: str, schema: str | None) -> datetime | None:
    """When the run's extract first began (``import_runs.started_at``, aware UTC), or None."""
    import sqlalchemy as sa

    from .warehouse.definitions import tables

    runs = tables(schema).import_runs
    with engine.connect() as conn:
        return conn.execute(sa.select(runs.c.started_at).where(runs.c.run_id == run_id)).scalar()


@_records_failure
@_reports_warehouse_errors
@_collects_garbage_less_often
@_talks_to_salesforce
def write_back(*, run_id: str, api_budget_left: int | None = None) -> dict[str, Any]:
    """Drain the outbox into Salesforce (collections, 200 a call) and update order lifecycles."""
    from airflow.sdk.exceptions import AirflowFailException

    from .writeback import ImportedStatusRefused

    config = _config()
    engine = _warehouse(config)
    flags = config.write_back
    if not (flags.mark_imported or flags.set_customer_id or flags.x_out_card_fields or flags.x_out_card_fields_not_imported):
        log.info("Write-back disabled in the config")
        return {"run_id": run_id, "attempted": 0, "api_calls": 0, "api_budget_left": api_budget_left}
    hook = _hook(config, api_budget_left, run_id=run_id, engine=engine)
    try:
        summary = _drainer(config, engine, hook, run_id).drain()
    except ImportedStatusRefused as exc:
        raise AirflowFailException(f"write_back: {exc}") from None  # a config error: retrying cannot help
    # Every outbox row and order lifecycle changed state: without fresh statistics PostgreSQL plans
    # the report's retention purge for the one DONE row the load's statistics knew, a nested loop
    # over the whole outbox (minutes at 100k rows instead of a tenth of a second).
    _refresh_statistics(engine, *_LOADED_TABLES, schema=config.warehouse_schema, columns=_LOADED_COLUMNS)
    log.info("Write-back: %s", summary.as_dict())
    return {"run_id": run_id, **summary.as_dict(), "api_calls": hook.usage.calls, "api_budget_left": hook.usage.budget_left}


def _drainer(config, engine, hook, run_id: str, actions: tuple[str, ...] | None = None):
    from .warehouse.definitions import tables
    from .writeback import OutboxDrainer

    return OutboxDrainer(
        engine,
        hook,
        tables=tables(config.warehouse_schema),
        run_id=run_id,
        order_object=config.order_object,
        imported_status=config.imported_status,
        card_fields=config.card_fields,
        max_attempts=config.writeback_max_attempts,
        bulk_threshold=config.bulk_writeback_threshold,
        actions=actions,
        own_writes_table=tables(config.warehouse_schema).sync_state,
    )


@_records_failure
@_talks_to_salesforce
def mask_card_fields(*, run_id: str, api_budget_left: int | None = None) -> dict[str, Any]:
    """X out the card fields the write-back has not: those of orders set aside (quarantined,
    skipped, back to Draft), whether or not the run got as far as the write-back (``card_masks``).
    Skipped while the import is disabled: a paused import neither reads nor writes Salesforce."""
    from airflow.sdk.exceptions import AirflowSkipException

    from .card_masks import CARD_MASK_ACTION

    config = _config()
    if not config.enabled:
        raise AirflowSkipException(IMPORT_DISABLED)
    engine = _warehouse(config)
    hook = _hook(config, api_budget_left, run_id=run_id, engine=engine)
    drainer = _drainer(config, engine, hook, run_id, actions=(CARD_MASK_ACTION,))
    if not drainer.due_count():
        log.info("No card fields left to X out")
        return {"run_id": run_id, "attempted": 0, "api_calls": 0}
    if api_budget_left is None:
        hook.set_budget_share(config.api_budget_share)  # the stages before left no budget behind
    summary = drainer.drain()
    _refresh_statistics(engine, *_LOADED_TABLES, schema=config.warehouse_schema, columns=_LOADED_COLUMNS)  # as after write_back
    log.info("Card fields X-ed out: %s", summary.as_dict())
    return {"run_id": run_id, **summary.as_dict(), "api_calls": hook.usage.calls}


@_reports_warehouse_errors
@_talks_to_salesforce
def send_shipments(*, run_id: str) -> dict[str, Any]:
    """Check new shipments; when sending is enabled, queue the valid ones and drain their outbox rows."""
    from airflow.sdk.exceptions import AirflowFailException

    from .shipments import ShipmentConfigRefused, ShipmentSummary, check, queue, targets_from_config
    from .warehouse.definitions import tables
    from .writeback import ImportedStatusRefused, OutboxDrainer

    config = _config()
    engine = _warehouse(config)
    t = tables(config.warehouse_schema)
    summary = ShipmentSummary()
    check(engine, t, summary)
    if not config.shipments.enabled:
        log.info("Shipments checked (%s); sending them is off in the config (shipments.enabled)", summary.as_dict())
        return {"run_id": run_id, "enabled": False, **summary.as_dict(), "api_calls": 0}
    hook = _hook(config)
    try:
        targets = targets_from_config(config, hook.describe)
    except ShipmentConfigRefused as exc:
        raise AirflowFailException(f"send_shipments: {exc}") from None  # a config error: retrying cannot help
    queue(engine, t, targets, run_id, summary)
    drainer = OutboxDrainer(
        engine,
        hook,
        tables=t,
        run_id=run_id,
        order_object=config.order_object,
        imported_status=config.imported_status,
        card_fields=config.card_fields,
        max_attempts=config.writeback_max_attempts,
        only_shipments=True,
        # No echo (R13): the Orders (and Order Products) a shipment writes are our own writes, left
        # out of the next import's extract like the import's write-back's.
        own_writes_table=t.sync_state,
    )
    try:
        sent = drainer.drain()
    except ImportedStatusRefused as exc:
        raise AirflowFailException(f"send_shipments: {exc}") from None
    log.info("Shipments: %s; write-back: %s", summary.as_dict(), sent.as_dict())
    return {"run_id": run_id, "enabled": True, **summary.as_dict(), **sent.as_dict(), "api_calls": hook.usage.calls}


@_reports_warehouse_errors
def report(
    *,
    run_id: str,
    results: Mapping[str, Mapping[str, Any] | None],
    started: float | None = None,
    run_started: datetime | None = None,
) -> dict[str, Any]:
    """Record the run in import_runs and log its summary (runs even when a stage failed); purge
    staged records and finished write-back rows past their retention."""
    from .report import finish_run, summary_lines
    from .retention import purge_expired

    config = _config()
    engine = _warehouse(config)
    row = finish_run(
        engine, run_id=run_id, results=results, schema=config.warehouse_schema, finished=_now(), disabled=not config.enabled,
        run_started=run_started,
    )
    for line in summary_lines(row):
        log.info(line)
    masked = (results.get("extract") or {}).get("card_data_masked")
    if masked:
        log.warning("  card numbers masked in %d orders (card_data_masked): clean them up in Salesforce, see docs/runbook.md", masked)
    purge_expired(engine, timedelta(days=config.retention_days), schema=config.warehouse_schema, now=_now())
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


__all__ = [
    "SalesforceUnavailable",
    "extract",
    "load",
    "mask_card_fields",
    "mark_status_changes",
    "report",
    "send_shipments",
    "transform",
    "validate",
    "write_back",
]
