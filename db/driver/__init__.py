"""The driver seam: every SQL difference between the ledger's two databases, behind one
interface with one implementation per database (``postgresql.py``, ``sqlite.py``), the way
River's ``riverdriver`` does it. ``tests/integration/test_driver_conformance.py`` runs the same
test body against both.

A caller asks :func:`driver_for` for the driver of its engine or connection (a dictionary
lookup by dialect name: the driver objects are built once, at import) and then either calls a
method (an insert with ON CONFLICT, the database clock, an advisory lock, a pick evaluated
once, a payload search condition, a term the planner takes no index for, the planner's
estimates) or reads a capability flag where the two databases take different algorithms (COPY
or a multi-row INSERT, one set-based statement or one per row, the rollup in SQL or in Python,
...). The algorithm stays with its caller; the flag says which one applies. On the per-job
paths the driver is resolved once per call of the ledger function (``ledger.core.HotStatement``
on PostgreSQL: once per dialect, then an identity check), never per statement of a loop.

SQL that is the same text on both databases but compiles differently (``db.types``: the
``UTCDateTime`` column type, ``db_now``, ``json_append``, ``json_array_length``, ``utc_minute``
and ``utc_hour``) stays a SQLAlchemy construct in ``db/types.py``; the engines' connection setup
stays in ``db/engine.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects.postgresql import Insert as PostgreSQLInsert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.sql.elements import ColumnElement

#: the INSERT construct of either database: both offer ``on_conflict_do_nothing``,
#: ``on_conflict_do_update``, ``excluded`` and ``returning``
Insert = PostgreSQLInsert | SQLiteInsert


class Driver(Protocol):
    """What the ledger needs to know, or to have done, differently per database."""

    @property
    def name(self) -> str:
        """The SQLAlchemy dialect name (``postgresql``, ``sqlite``)."""
        ...

    # --- capabilities: which algorithm a caller takes -----------------------------------

    @property
    def notifies(self) -> bool:
        """LISTEN/NOTIFY exists (an insert trigger notifies the maintainer): the maintainer
        listens, and a wake-up naming queues dispatches just those (``dispatch_queue_now``).
        Without it the maintainer polls."""
        ...

    @property
    def advisory_locks(self) -> bool:
        """:meth:`try_xact_lock` can be refused (another transaction holds the key). Without
        them every write transaction is serialized already (SQLite's ``BEGIN IMMEDIATE``) and
        the lock is always granted; ``dispatch_plan`` then needs no lock in its statement."""
        ...

    @property
    def prepared_hot_path(self) -> bool:
        """The per-job statements are compiled once and sent as prepared statements
        (``ledger.core.HotStatement``), and writes may go through the database driver's own
        connection, without SQLAlchemy (``db.engine.driver_write``: a single submit, a
        producer's direct dispatch; a worker's held connections for lease reads)."""
        ...

    @property
    def supports_copy(self) -> bool:
        """Many plain jobs are inserted with COPY (``producer.insert_jobs``) rather than a
        multi-row INSERT."""
        ...

    @property
    def array_sql(self) -> bool:
        """A statement can take a list of values as one array parameter and expand it in SQL
        (``unnest``, ``= ANY``, ``ARRAY(subquery)``, with ``LATERAL``): a group commit of
        starts or outcomes is one statement, a dispatch pass's plan one round trip, the fair
        pass reads each partition's best jobs by index. Without it: a statement per row, or a
        window function."""
        ...

    @property
    def dependents_released_by_trigger(self) -> bool:
        """A trigger (migration 0011) resolves the dependency edges of a job that ends,
        inside the statement that ends it. Without it the ledger releases the dependents
        itself in the same transaction (``ledger.dependencies.release_dependents``)."""
        ...

    @property
    def statement_timeout(self) -> bool:
        """A statement can be cancelled at a time limit (``statement_timeout``): a payload
        search reads slice after slice within a time budget. Without it: one exact statement."""
        ...

    @property
    def limited_union_branches(self) -> bool:
        """Each branch of a UNION ALL may have its own ORDER BY ... LIMIT: the newest jobs are
        read per status along the (status, created_at) index and merged, instead of sorting
        every job."""
        ...

    @property
    def id_prefix_search(self) -> bool:
        """A job search also matches the start of a job id, as one range of the primary key
        (PostgreSQL orders uuids byte by byte, the order of their hex text: no id is cast
        to text). Without it a search matches the payload only."""
        ...

    @property
    def sql_rollup(self) -> bool:
        """The metrics rollup aggregates in SQL (``metrics.rollup.compute_postgresql``:
        ``percentile_cont``, ``date_bin``, ``FILTER``, ``jsonb_array_elements``). Without it the
        rollup reads the rows and computes the same numbers in Python (``compute_python``)."""
        ...

    @property
    def server_process(self) -> bool:
        """The database does a statement's work in a server process of its own, not in this
        one: a read on a second connection runs there while this thread works (the hourly
        sums of a long chart, ``metrics.read.series``, in a transaction with more
        ``work_mem``, while this thread decodes the hour histograms). Without it (the embedded
        file) the statements run in this process, one after the other."""
        ...

    # --- operations ---------------------------------------------------------------------

    def insert(self, table: Table) -> Insert:
        """The INSERT of ``table`` that supports ``on_conflict_do_nothing``/``do_update``."""
        ...

    def clock(self, conn: Connection) -> datetime:
        """The database's current time, aware UTC (PostgreSQL's ``now()``: the start of the
        transaction; SQLite's: the statement's, millisecond precision)."""
        ...

    def try_xact_lock(self, conn: Connection, key: int) -> bool:
        """Take the advisory lock ``key`` until the transaction ends, if no other holds it."""
        ...

    def xact_lock(self, conn: Connection, key: int) -> None:
        """Wait for the advisory lock ``key``, held until the transaction ends."""
        ...

    def in_picked(self, column: ColumnElement[Any], picked: Any) -> ColumnElement[bool]:
        """``column`` is one of the values the single-column SELECT ``picked`` returns, with
        ``picked`` evaluated ONCE (it may be LIMITed and SKIP LOCKED: evaluated again, it would
        pick other rows)."""
        ...

    def text_contains(self, column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
        """``column``'s text (a JSON column: its JSON text) matches the LIKE ``pattern``
        (backslash escapes) in any case."""
        ...

    def unindexed(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """``column`` as a term the planner picks no index by, where the planner needs telling
        (SQLite, which keeps no statistics unless ANALYZE ran: ``+column``, its documented
        way), so that a read goes by the partial index meant for it. Where the planner
        chooses by statistics of its own (PostgreSQL) the column itself: it is left alone."""
        ...

    def value_estimates(self, conn: Connection, table: str, column: str) -> dict[str, int]:
        """The planner's estimate of the rows per common value of ``table.column`` (empty
        when the database keeps none, or before the table was analyzed): free at any size."""
        ...


# the implementations import ``Insert`` from here: imported once this module has defined it
from db.driver import postgresql, sqlite  # noqa: E402

_BY_NAME: dict[str, Driver] = {d.name: d for d in (postgresql.DRIVER, sqlite.DRIVER)}


def driver_for(bind: Engine | Connection) -> Driver:
    """The driver of ``bind``'s database: one dictionary lookup (the drivers are built once)."""
    try:
        return _BY_NAME[bind.dialect.name]
    except KeyError:
        raise ValueError(f"no ledger driver for the {bind.dialect.name!r} database") from None


def driver_named(name: str) -> Driver:
    """The driver of the SQLAlchemy dialect ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"no ledger driver for the {name!r} database") from None
