"""Which orders a DAG run imports: its mode and extract window, from the run's type and params.

- ``order_numbers`` param: re-sync just those orders (no time window);
- ``order_ids`` (an event run: the Order ids of the change events that started it): those orders;
- ``full_resync`` param: every Activated order within the lookback;
- ``since`` param: orders activated or changed since that date;
- backfill runs: exactly their data interval (on ``SystemModstamp``);
- scheduled and plain manual runs ("incremental"): from the stored watermark (highest
  ``SystemModstamp`` loaded) minus the overlap, so a paused DAG or a failed run loses nothing;
  the very first run has no watermark and reaches back ``lookback_days``. Scheduled runs stop at
  their ``data_interval_end``; manual runs at "now". A scheduled run cleared after later runs
  moved the watermark past its interval re-reads its own data interval.

The watermark is the promise "every order changed before it is in the warehouse". A run may move
it (forward only) when its window provably reached back to the stored watermark, i.e. it read
everything changed since: ``RunPlan.covered_from``. A re-sync of chosen orders never moves it.
Where it moves to: :func:`watermark_reached`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .api_names import case_safe_id
from .config import ImportConfig
from .soql import ExtractWindow

INCREMENTAL, BACKFILL, SINCE, ORDER_NUMBERS, FULL_RESYNC = "incremental", "backfill", "since", "order_numbers", "full_resync"
ORDER_EVENTS = "order_events"


class ParamError(ValueError):
    """A run param has a bad value; the message names it."""


@dataclass(frozen=True)
class RunPlan:
    mode: str
    window: ExtractWindow
    note: str | None = None  # why the window is not the usual one for the mode

    @property
    def moves_watermark(self) -> bool:
        """Whether the window reads every order changed from some instant on (not chosen orders)."""
        return not (self.window.order_numbers or self.window.order_ids)

    @property
    def covered_from(self) -> datetime | None:
        """Every order changed from this instant on is in the window (None: from the lookback's start)."""
        return self.window.changed_from or self.window.since

    def as_dict(self) -> dict[str, Any]:
        w = self.window
        return {
            "mode": self.mode,
            "changed_from": _iso(w.changed_from),
            "changed_to": _iso(w.changed_to),
            "activated_since": _iso(w.activated_since),
            "since": _iso(w.since),
            "order_numbers": list(w.order_numbers),
            "order_ids": list(w.order_ids),
            "moves_watermark": self.moves_watermark,
            "own_writes_left_out": len(w.own_writes),  # write-back spans not read back (own_writes.py)
            "note": self.note,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# The run params the DAG declares (and an event run's order ids): another key in a run's conf is
# a misspelling, which would otherwise run an ordinary incremental import and move the watermark.
RUN_PARAMS = ("since", "order_numbers", "full_resync", "order_ids")
# The dates Salesforce holds (a date field takes 1700 to 4000).
_FIRST_YEAR, _LAST_YEAR = 1700, 4000


def check_param_names(params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - set(RUN_PARAMS))
    if unknown:
        raise ParamError(
            f"param {unknown[0]!r} is not a param of this DAG ({', '.join(RUN_PARAMS)}): check its spelling in the run's conf"
        )


def parse_since(value: Any) -> datetime | None:
    """The ``since`` param: a date or an ISO datetime (naive means UTC)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ParamError(f"param 'since': {text!r} is not a date (YYYY-MM-DD) or an ISO datetime") from None
    try:
        parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        parsed = None
    if parsed is None or not _FIRST_YEAR <= parsed.year <= _LAST_YEAR:
        raise ParamError(f"param 'since': {str(value)[:40]!r} is outside the dates Salesforce holds ({_FIRST_YEAR} to {_LAST_YEAR})")
    return parsed


def _listed(name: str, value: Any) -> tuple[str, ...]:
    """A list param's texts: a list of texts, or one text separated by commas, spaces or newlines.
    Given but empty, or holding a number (an OrderNumber keeps its leading zeros), it is refused:
    either would re-sync nothing, or run an ordinary import instead."""
    if value is None or value == [] or value == "":
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ParamError(f"param {name!r}: give a list of texts or one text, not {type(value).__name__}")
    for item in items:
        if not isinstance(item, str):
            raise ParamError(f"param {name!r}: {item!r} is not text; write each as text, as Salesforce shows it (\"00000166\")")
    texts = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not texts:
        raise ParamError(f"param {name!r}: {value!r} names none; leave it out for an ordinary run")
    return texts


def parse_order_numbers(value: Any) -> tuple[str, ...]:
    """The ``order_numbers`` param: a list, or a string separated by commas, spaces or newlines."""
    numbers = _listed("order_numbers", value)
    for number in numbers:
        if len(number) > 30:
            raise ParamError(f"param 'order_numbers': {number[:40]!r} is longer than an OrderNumber (30)")
    return numbers


def parse_order_ids(value: Any) -> tuple[str, ...]:
    """The ``order_ids`` param (a re-sync by Id, or an event run's orders): each a 15- or
    18-character Salesforce id; a list, or a string as ``order_numbers`` takes one. Kept as
    given (Salesforce takes both forms, and ``not_found`` names them as typed); compared with
    the Ids Salesforce returns in their 18-character form (``api_names.case_safe_id``)."""
    ids = _listed("order_ids", value)
    for order_id in ids:
        try:
            case_safe_id(order_id)
        except ValueError as exc:
            raise ParamError(f"param 'order_ids': {exc}") from None
    return ids


def order_ids_of_events(triggering_asset_events: Mapping[Any, Any]) -> list[str]:
    """The Order ids the change-event trigger put in a run's asset events (their extra's payload)."""
    ids: dict[str, None] = {}
    for events in triggering_asset_events.values():
        for event in events:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            ids.update(dict.fromkeys(payload.get("order_ids") or ()))
    return list(ids)


def parse_watermark(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"
    return datetime.fromisoformat(text).astimezone(UTC)


def watermark_reached(window: Mapping[str, Any], max_system_modstamp: str | None) -> str | None:
    """Where a run's load moves the watermark (if it may, see ``_advance_watermark``), or None.

    ``window``: the extract's plan (``RunPlan.as_dict``) with ``read_from``, when its reading
    began; ``max_system_modstamp``: the highest stamp it read. A window with an end (scheduled,
    backfill) read everything changed before that end: the mark moves to it. A window without one
    (a manual or event run, ``since``, a full re-sync) moves it to the highest stamp read, but no
    later than when reading began: a stamp past that is an order edited while the extract paged,
    and an order changed in the meantime that the query's result set does not hold (activated,
    or changed from outside the window) has an earlier stamp; the next window (the mark less
    ``overlap_minutes``) must not start after it. Both are read by the import's clock, the
    overlap covering its difference from Salesforce's. A re-sync of chosen orders moves nothing."""
    if not window.get("moves_watermark", not (window.get("order_numbers") or window.get("order_ids"))):
        return None
    if window.get("changed_to"):
        return window["changed_to"]
    read_from = window.get("read_from")  # (not there: an extract of an older release)
    if max_system_modstamp and read_from and parse_watermark(read_from) < parse_watermark(max_system_modstamp):
        return read_from
    return max_system_modstamp


def plan_run(
    *,
    run_type: str,
    data_interval_start: datetime | None,
    data_interval_end: datetime | None,
    params: Mapping[str, Any],
    watermark: str | None,
    now: datetime,
    config: ImportConfig,
) -> RunPlan:
    activated_since = now - timedelta(days=config.lookback_days)
    check_param_names(params)
    order_numbers = parse_order_numbers(params.get("order_numbers"))
    since = parse_since(params.get("since"))
    order_ids = parse_order_ids(params.get("order_ids"))
    given = [name for name, value in (("order_ids", order_ids), ("order_numbers", order_numbers),
                                      ("full_resync", params.get("full_resync")), ("since", since)) if value]
    if len(given) > 1:  # one would win silently: which run was meant is a guess
        raise ParamError(f"param {given[0]!r} and param {given[1]!r} cannot be given together: trigger one run for each")
    if order_ids:
        return RunPlan(ORDER_EVENTS, ExtractWindow(None, None, activated_since, order_ids=order_ids))
    if order_numbers:
        return RunPlan(ORDER_NUMBERS, ExtractWindow(None, None, activated_since, order_numbers=order_numbers))
    if params.get("full_resync"):
        return RunPlan(FULL_RESYNC, ExtractWindow(None, None, activated_since))
    if since is not None:
        return RunPlan(SINCE, ExtractWindow(None, None, activated_since, since=since))
    if str(run_type).lower() == "backfill":  # DagRunType.BACKFILL_JOB's value
        if data_interval_start is None or data_interval_end is None:
            raise ParamError("a backfill run needs a data interval")
        return RunPlan(BACKFILL, ExtractWindow(data_interval_start, data_interval_end, activated_since))
    mark = parse_watermark(watermark)
    changed_from = mark - timedelta(minutes=config.overlap_minutes) if mark else None
    changed_to = data_interval_end if str(run_type).lower() == "scheduled" else None
    if mark and changed_to and mark >= changed_to and data_interval_start is not None:
        # A scheduled run cleared (or late) after later runs loaded past its interval: what it was
        # scheduled for is covered already; it re-reads its own interval, as a backfill would. (Past
        # its end by less than the overlap too: the mark less the overlap would read a sliver of it.)
        note = (
            f"the watermark ({_iso(mark)}) is already past this run's interval end ({_iso(changed_to)}): "
            f"re-reading its data interval {_iso(data_interval_start)} .. {_iso(changed_to)}"
        )
        return RunPlan(INCREMENTAL, ExtractWindow(data_interval_start, changed_to, activated_since), note)
    return RunPlan(INCREMENTAL, ExtractWindow(changed_from, changed_to, activated_since))
