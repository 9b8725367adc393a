"""The warehouse: table definitions (SQLAlchemy Core), engines, views and dialect-aware upserts.

The same definitions serve SQLite (the embedded default) and PostgreSQL. Every timestamp is
stored and returned timezone-aware in UTC (:class:`UtcDateTime`); JSON columns are ``JSONB``
on PostgreSQL so analysts can query into them. ``docs/warehouse.md`` documents every table,
column and view.

One module per job; this package re-exports their public names, so
``from salesforce_orders.warehouse import tables, upsert`` reaches any of them:

- :mod:`.types`: column types (``UtcDateTime``, ``Money``, JSON, rates) and UTC timestamps;
- :mod:`.definitions`: the table definitions, the warehouse's one specification, with the row
  states and the column limits the validation shares (``tables(schema)``, ``Tables``);
- :mod:`.views`: the analysts' views and keeping them in place;
- :mod:`.engines`: engines from a URL, a SQLite file or an Airflow connection; the JSON codec;
- :mod:`.writes`: upserts, updates and inserts of many rows (COPY on PostgreSQL), key lookups;
- :mod:`.errors`: failed statements told without row values, and explained in short.

Submodules import one another, never this package. Each submodule's ``__all__`` is its public
interface, and this package re-exports exactly those names. The constants re-exported here are
copies: a test that changes ``UPSERT_BATCH_SIZE`` or ``COPY_MIN_ROWS`` patches :mod:`.writes`.
"""

from __future__ import annotations

from . import definitions, engines, errors, types, views, writes
from .definitions import *  # noqa: F403
from .engines import *  # noqa: F403
from .errors import *  # noqa: F403
from .types import *  # noqa: F403
from .views import *  # noqa: F403
from .writes import *  # noqa: F403

__all__ = [
    *definitions.__all__,
    *engines.__all__,
    *errors.__all__,
    *types.__all__,
    *views.__all__,
    *writes.__all__,
]
