"""A SQLite study shared by several processes: each transaction takes SQLite's write lock as it begins.

Optuna hands a queued trial to a worker by reading it WAITING and then marking it RUNNING
in one session (``Study._pop_waiting_trial_id``, ``RDBStorage.set_trial_state_values``),
reading the row ``FOR UPDATE``. SQLite has no ``FOR UPDATE``, and Python's ``sqlite3`` driver
opens a transaction only at the first write, after the read: two workers both read the
trial WAITING and both mark it RUNNING. Both train it, and the second to finish dies with
"Cannot tell a PRUNED trial". A staged search queues every trial (``pipeline/tune/staged.py``),
so two ``mlops tune`` on one ``optuna.db`` met it within seconds (trial 4 of a 15-trial
search ran in both workers); Optuna's issues #4002 and #4621 report the same.

The fix is SQLAlchemy's recipe for the ``pysqlite`` driver (its own transaction handling off,
``BEGIN`` sent by SQLAlchemy when a transaction begins), with ``BEGIN IMMEDIATE``: a
transaction holds the write lock from its first statement, so a read and the write it decides
are one step, and another worker's transaction waits for it (the driver's busy timeout). A plain
``BEGIN`` would not do: in WAL mode the second worker's write after a stale read fails at once
(``SQLITE_BUSY_SNAPSHOT``) instead of waiting. The cost is that a search's own reads of the
study queue behind a writer for one transaction (well under a millisecond in WAL mode);
``mlops status`` reads through its own engine (``pipeline/tune/readonly.py``) and never waits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event


def immediate_transactions(engine: Any) -> None:
    """Make every transaction on ``engine`` begin with ``BEGIN IMMEDIATE`` (SQLite only; others untouched).

    Args:
        engine: a SQLAlchemy engine (an ``RDBStorage``'s ``engine``); its pooled connections are
            closed, so every connection from now on is made with the change.
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _driver_transactions_off(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing; the listener below does

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would keep the driver's behaviour
