"""Run planning: which window each kind of run extracts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from salesforce_orders.config import parse_config
from salesforce_orders.runs import (
    BACKFILL,
    FULL_RESYNC,
    INCREMENTAL,
    ORDER_EVENTS,
    ORDER_NUMBERS,
    SINCE,
    ParamError,
    order_ids_of_events,
    parse_order_numbers,
    parse_since,
    plan_run,
    watermark_reached,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
START = datetime(2026, 11, 22, 11, 30, tzinfo=UTC)
END = datetime(2026, 11, 22, 11, 45, tzinfo=UTC)


def plan(run_type="scheduled", params=None, watermark=None, **config):
    return plan_run(
        run_type=run_type,
        data_interval_start=START,
        data_interval_end=END,
        params=params or {},
        watermark=watermark,
        now=NOW,
        config=parse_config(config or None),
    )


def test_first_scheduled_run_reaches_back_the_lookback():
    p = plan()
    assert p.mode == INCREMENTAL
    assert p.window.changed_from is None
    assert p.window.changed_to == END
    assert p.window.activated_since == NOW - timedelta(days=730)


def test_scheduled_run_starts_at_watermark_minus_overlap():
    p = plan(watermark="2026-11-20T10:00:00.000+0000", overlap_minutes=5)
    assert p.window.changed_from == datetime(2026, 11, 20, 9, 55, tzinfo=UTC)
    assert p.window.changed_to == END


@pytest.mark.parametrize("past_end", [timedelta(minutes=3), timedelta(hours=2)], ids=["within-the-overlap", "long-past"])
def test_a_scheduled_run_cleared_after_the_mark_passed_its_end_re_reads_its_own_interval(past_end):
    """R5, also when a later run loaded up to less than overlap_minutes past the interval's end: the
    mark less the overlap would read a sliver of the interval, and say nothing."""
    p = plan(watermark=(END + past_end).isoformat())  # overlap 10
    assert p.mode == INCREMENTAL
    assert (p.window.changed_from, p.window.changed_to) == (START, END)
    assert "already past this run's interval end" in p.note


def test_manual_run_without_params_runs_up_to_now():
    p = plan(run_type="manual", watermark="2026-11-20T10:00:00.000+0000")
    assert p.mode == INCREMENTAL and p.window.changed_to is None


def test_where_each_kind_of_run_moves_the_watermark():
    """R2: a window with an end moves the mark to it; one without, to the highest stamp read but no
    later than when its extract began reading; a re-sync of chosen orders nowhere."""
    began, stamp, earlier = "2026-11-22T12:00:05.250000+00:00", "2026-11-22T12:00:09.000+0000", "2026-11-22T11:59:00.000+0000"

    def reached(run_type="manual", params=None, read_from=began, max_stamp=stamp):
        window = {**plan(run_type=run_type, params=params, watermark="2026-11-20T10:00:00Z").as_dict(), "read_from": read_from}
        return watermark_reached(window, max_stamp)

    assert reached("scheduled") == reached("backfill") == END.isoformat()
    for run_type, params in [("manual", None), ("asset_triggered", None), ("manual", {"since": "2026-01-01"}),
                             ("manual", {"full_resync": True})]:
        assert reached(run_type, params) == began  # an order edited while it paged: not past the start
        assert reached(run_type, params, max_stamp=earlier) == earlier
        assert reached(run_type, params, max_stamp=None) is None  # nothing read: the mark stays
    assert reached(read_from=None) == stamp  # an extract of an older release did not say
    assert reached(params={"order_numbers": ["00000100"]}) is None
    assert reached("asset_triggered", {"order_ids": ["801000000000001AAA"]}) is None


def test_backfill_takes_exactly_its_interval():
    p = plan(run_type="backfill", watermark="2026-11-20T10:00:00.000+0000")
    assert p.mode == BACKFILL
    assert (p.window.changed_from, p.window.changed_to) == (START, END)


def test_params_take_precedence():
    assert plan(params={"order_numbers": ["00000100", "00000101"]}).window.order_numbers == ("00000100", "00000101")
    assert plan(params={"order_numbers": "00000100, 00000101"}).mode == ORDER_NUMBERS
    assert plan(params={"full_resync": True}).mode == FULL_RESYNC
    since = plan(params={"since": "2026-01-01"})
    assert since.mode == SINCE and since.window.since == datetime(2026, 1, 1, tzinfo=UTC)


def test_lookback_is_configurable():
    assert plan(lookback_days=30).window.activated_since == NOW - timedelta(days=30)


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday", "2026-13-01", "01/02/2026",
        # outside the dates Salesforce holds, or past what a datetime takes once made UTC
        "0001-01-01", "0999-12-31", "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "4001-01-01",
    ],
)
def test_bad_since_names_the_param(bad):
    with pytest.raises(ParamError, match="param 'since'"):
        parse_since(bad)


def test_an_event_run_reads_just_its_orders_and_never_moves_the_watermark():
    ids = ["801000000000001AAA", "801000000000002AAA"]
    p = plan(run_type="asset_triggered", params={"order_ids": ids}, watermark="2026-11-22T11:00:00Z")
    assert p.mode == ORDER_EVENTS and p.window.order_ids == tuple(ids)
    assert (p.window.changed_from, p.window.changed_to) == (None, None)
    assert not p.moves_watermark and p.as_dict()["order_ids"] == ids
    with pytest.raises(ParamError, match="not a Salesforce id"):
        plan(params={"order_ids": ["801' OR Id != '"]})


def test_order_ids_come_from_the_trigger_payloads_of_the_run_s_asset_events():
    from types import SimpleNamespace

    events = {
        "salesforce.order_change_events": [
            SimpleNamespace(extra={"from_trigger": True, "payload": {"order_ids": ["801A", "801B"], "changes": 2}}),
            SimpleNamespace(extra={"from_trigger": True, "payload": {"order_ids": ["801B", "801C"], "changes": 2}}),
        ],
        "some.other.asset": [SimpleNamespace(extra={})],
    }
    assert order_ids_of_events(events) == ["801A", "801B", "801C"]
    assert order_ids_of_events({}) == []


def test_order_numbers_are_deduplicated_and_checked():
    assert parse_order_numbers(["1", "1", " 2 "]) == ("1", "2")
    with pytest.raises(ParamError, match="order_numbers"):
        parse_order_numbers(["x" * 31])


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"order_numbers": [166]}, "order_numbers"),  # a number loses an OrderNumber's leading zeros
        ({"order_numbers": [None]}, "order_numbers"),
        ({"order_numbers": [" "]}, "order_numbers"),  # names none: not an ordinary run in disguise
        ({"order_numbers": " , "}, "order_numbers"),
        ({"order_numbers": 5}, "order_numbers"),
        ({"order_ids": 5}, "order_ids"),
        ({"order_ids": ["801 OR 1=1"]}, "order_ids"),
        ({"order_ids": ["80100000000000"]}, "order_ids"),  # 14 characters
        ({"order_ids": ["8010000000000011"]}, "order_ids"),  # 16
        ({"order_ids": ["801000000000001AAB"]}, "order_ids"),  # a suffix that does not fit the first 15
        ({"order_number": ["00000166"]}, "order_number"),  # a misspelt key: refused, never an incremental run
        ({"order_numbers": ["00000166"], "since": "2026-01-01"}, "order_numbers"),  # two runs in one: which is meant?
        ({"full_resync": True, "since": "2026-01-01"}, "full_resync"),
    ],
    ids=repr,
)
def test_a_run_conf_that_would_re_sync_nothing_or_something_else_is_refused_naming_the_param(params, named):
    with pytest.raises(ParamError, match=f"param '{named}'"):
        plan(run_type="manual", params=params)


def test_order_ids_may_be_given_as_one_text_as_order_numbers_can():
    p = plan(run_type="manual", params={"order_ids": "801000000000001AAA, 801000000000002AAA"})
    assert p.window.order_ids == ("801000000000001AAA", "801000000000002AAA") and not p.moves_watermark


def test_order_ids_may_be_15_or_18_characters_and_are_kept_as_typed():
    """Salesforce takes both forms; the re-sync's not_found names an Id as it was typed."""
    ids = ["801000000000aBc", "801000000000ABCaa2", "801000000000001AAA"]
    p = plan(run_type="manual", params={"order_ids": ids})
    assert p.window.order_ids == tuple(ids) and p.mode == ORDER_EVENTS


def test_a_since_before_the_year_1000_would_have_been_written_unpadded_into_soql():
    from salesforce_orders.soql import datetime_literal

    assert datetime_literal(datetime(1700, 1, 2, 3, 4, 5, 678, tzinfo=UTC)) == "1700-01-02T03:04:05Z"
    assert datetime_literal(datetime(999, 1, 1, tzinfo=UTC)) == "0999-01-01T00:00:00Z"
