"""Ledger connection: engine, one managed session scope, and the schema check against Alembic head."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from auditor.errors import LedgerError

DEFAULT_LEDGER_FILE = "vecaudit.db"


def default_ledger_url() -> str:
    """``VECAUDIT_LEDGER`` when set, else a SQLite file ``./vecaudit.db``."""
    return os.environ.get("VECAUDIT_LEDGER") or f"sqlite:///{DEFAULT_LEDGER_FILE}"


def migrations_dir() -> str:
    """The Alembic script directory, from the installed ``migrations`` package (works from a wheel)."""
    return str(resources.files("migrations"))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", migrations_dir())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_foreign_keys_on(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # migrations switch enforcement off on their connection (migrations/env.py); it is back on for the next user
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Ledger:
    """A ledger database by URL. ``open()`` verifies the schema is at head (creating a fresh SQLite file)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_ledger_url()
        try:
            self._parsed = make_url(self.url)
        except ArgumentError as e:
            raise LedgerError(
                f"not a database URL: {self.url!r}",
                hint="use e.g. sqlite:///vecaudit.db or postgresql+psycopg://user@host/db",
            ) from e
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self._parsed.get_backend_name() == "sqlite"

    @property
    def display_url(self) -> str:
        return self._parsed.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = self._parsed
            if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", ""):
                try:
                    import psycopg  # noqa: F401

                    url = url.set(drivername="postgresql+psycopg")
                except ImportError:
                    pass
            try:
                self._engine = create_engine(url, future=True)
            except Exception as e:  # missing DB driver, bad options
                raise LedgerError(f"cannot use ledger {self.display_url}: {e}") from e
            if self.is_sqlite:
                event.listen(self._engine, "connect", _sqlite_pragmas)
                event.listen(self._engine, "checkout", _sqlite_foreign_keys_on)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    def _sqlite_file_is_new(self) -> bool:
        database = self._parsed.database
        if not database or database == ":memory:":
            return True
        path = Path(database)
        if not path.exists() or path.stat().st_size == 0:
            parent = path.parent if str(path.parent) else Path(".")
            if not parent.exists() or not os.access(parent, os.W_OK):
                raise LedgerError(
                    f"cannot create the ledger file {path}: folder {parent} is missing or not writable",
                    hint="pass --ledger sqlite:///a/writable/path.db or set VECAUDIT_LEDGER",
                )
            return True
        if not os.access(path, os.W_OK):
            raise LedgerError(f"ledger file {path} is not writable", hint="fix its permissions or pass --ledger")
        return False

    def require_existing(self) -> Ledger:
        """Refuse a SQLite ledger file that does not exist (or is empty): read commands never create one, so a
        mistyped path is reported instead of answered from a fresh, empty ledger."""
        database = self._parsed.database
        if self.is_sqlite and database and database != ":memory:":
            path = Path(database)
            if not path.is_file() or path.stat().st_size == 0:
                raise LedgerError(
                    f"there is no ledger at {path}",
                    hint="check --ledger / VECAUDIT_LEDGER; `vecaudit scan` or `vecaudit db upgrade` creates one",
                )
        return self

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except OperationalError as e:
            raise LedgerError(
                f"ledger {self.display_url} is unreachable: {_reason(e)}",
                hint="check --ledger / VECAUDIT_LEDGER and that the database server is running",
            ) from e
        except SQLAlchemyError as e:
            raise self._unreadable(e) from e

    def _unreadable(self, e: SQLAlchemyError) -> LedgerError:
        if self.is_sqlite:
            hint = "point --ledger at a vecaudit ledger: a SQLite file that `vecaudit scan` created"
        else:
            hint = "check --ledger / VECAUDIT_LEDGER"
        return LedgerError(f"ledger {self.display_url} cannot be read: {_reason(e)}", hint=hint)

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()

    def upgrade(self, revision: str = "head", *, fresh_file: bool = False) -> None:
        """Migrate the ledger to ``revision``. ``fresh_file``: a SQLite file this process just created (nothing in
        it yet) is migrated without an fsync per statement (see :func:`_unsynced`)."""
        from alembic import command

        try:
            with self.engine.connect() as conn, _unsynced(conn, fresh_file and self.is_sqlite), conn.begin():
                cfg = alembic_config(self.url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except OperationalError as e:
            raise LedgerError(
                f"cannot migrate ledger {self.display_url}: {_reason(e)}",
                hint="check the URL, that the server runs, and that the user may create tables",
            ) from e
        except SQLAlchemyError as e:
            raise self._unreadable(e) from e

    def open(self, *, create: bool = True) -> Ledger:
        """Check the schema is at head. A SQLite file that does not exist yet is created and migrated when
        ``create`` (scans); read commands pass False and get :meth:`require_existing`'s error instead."""
        if not create:
            self.require_existing()
        fresh = self.is_sqlite and self._sqlite_file_is_new()
        if fresh:
            self.upgrade(fresh_file=True)
            return self
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            has_tables = bool(inspect(self.engine).get_table_names())
            state = "has no vecaudit schema" if current is None and not has_tables else f"is at {current or 'none'}"
            raise LedgerError(
                f"ledger {self.display_url} {state}, the schema head is {head}",
                hint=f"run `vecaudit db upgrade --ledger {self.display_url}`",
            )
        return self

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on error."""
        _ = self.engine
        assert self._sessions is not None
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as e:
            session.rollback()
            raise LedgerError(f"ledger write failed on {self.display_url}: {_reason(e)[:200]}") from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


@contextmanager
def _unsynced(conn: Any, on: bool) -> Iterator[None]:
    """SQLite's ``synchronous`` off on ``conn`` while the block runs (when ``on``), then back as it was.

    Why: pysqlite runs DDL outside a transaction, so migrating a new SQLite file committed (and fsynced) each of its
    ~25 statements: 76 fdatasyncs, ~0.3-0.4 s of a first scan on this project's box. Only a file that held nothing
    before is migrated this way; an interruption of the machine (not of the process) in those milliseconds can
    leave the new file unreadable: `vecaudit` then reports it as no ledger, and deleting it (it held nothing) starts
    afresh. The scan's first commit, synced
    again, makes the schema durable with it. Enter it before the block's transaction begins."""
    if not on:
        yield
        return
    # on the driver's connection, outside SQLAlchemy's transaction: SQLite refuses the switch inside one
    raw = conn.connection.driver_connection
    before = int(raw.execute("PRAGMA synchronous").fetchone()[0])
    raw.execute("PRAGMA synchronous=OFF")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA synchronous={before}")


def _reason(e: SQLAlchemyError) -> str:
    """The database's own one-line reason (without SQLAlchemy's SQL echo and background link)."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__
