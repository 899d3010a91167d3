"""A new SQLite ledger file is migrated without an fsync per DDL statement, to the same schema as a migration
with them, and its connections go back to SQLite's default safety level."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.util import CommandError

from auditor.ledger import Ledger


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall())


def test_a_fresh_file_gets_the_schema_of_a_synced_migration(tmp_path: Path) -> None:
    fresh = Ledger(f"sqlite:///{tmp_path / 'fresh.db'}").open()  # new file: migrated unsynced
    synced = Ledger(f"sqlite:///{tmp_path / 'synced.db'}")
    synced.upgrade()  # the ordinary path (db upgrade): every statement committed as it comes
    assert _schema(tmp_path / "fresh.db") == _schema(tmp_path / "synced.db")
    assert fresh.current_revision() == synced.current_revision() == synced.head_revision()
    with fresh.engine.connect() as conn:
        default = sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0]
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == default
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # reopened: an existing file is checked, not migrated again
    assert Ledger(f"sqlite:///{tmp_path / 'fresh.db'}").open().current_revision() == synced.head_revision()
    fresh.dispose()
    synced.dispose()


def test_the_unsynced_switch_is_undone_when_a_migration_fails(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'bad.db'}")
    with pytest.raises(CommandError, match="no-such-revision"):
        ledger.upgrade("no-such-revision", fresh_file=True)
    with ledger.engine.connect() as conn:
        default = sqlite3.connect(":memory:").execute("PRAGMA synchronous").fetchone()[0]
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == default
    ledger.dispose()
