"""``vecaudit db upgrade|current|check``: manage the ledger schema (Alembic)."""

from __future__ import annotations

import click

from auditor.cli.options import config_option, ledger_option, resolve_ledger_url
from auditor.config import load_config
from auditor.errors import LedgerError
from auditor.ledger import Ledger


def _ledger(flag: str | None, config_path: str | None) -> Ledger:
    return Ledger(resolve_ledger_url(flag, load_config(config_path)))


@click.group("db")
def db_group() -> None:
    """Ledger schema management."""


@db_group.command("upgrade")
@ledger_option
@config_option
@click.option("--revision", default="head", show_default=True)
def upgrade_command(ledger_url: str | None, config_path: str | None, revision: str) -> None:
    """Create or migrate the ledger schema.

    \b
    Example:
      vecaudit db upgrade --ledger postgresql+psycopg://audit@db.internal/vecaudit
    """
    ledger = _ledger(ledger_url, config_path)
    before = ledger.current_revision()
    ledger.upgrade(revision)
    after = ledger.current_revision()
    click.echo(f"ledger {ledger.display_url}: {before or 'empty'} -> {after}")


@db_group.command("current")
@ledger_option
@config_option
def current_command(ledger_url: str | None, config_path: str | None) -> None:
    """Print the ledger's schema revision and the head revision.

    \b
    Example:
      vecaudit db current
    """
    ledger = _ledger(ledger_url, config_path).require_existing()
    click.echo(f"current: {ledger.current_revision() or 'none'}  head: {ledger.head_revision()}")


@db_group.command("check")
@ledger_option
@config_option
def check_command(ledger_url: str | None, config_path: str | None) -> None:
    """Exit 0 when the ledger schema is at head, 4 (with the fix) otherwise.

    \b
    Example:
      vecaudit db check || vecaudit db upgrade
    """
    ledger = _ledger(ledger_url, config_path).require_existing()
    current, head = ledger.current_revision(), ledger.head_revision()
    if current != head:
        raise LedgerError(
            f"ledger {ledger.display_url} is at {current or 'none'}, head is {head}",
            hint=f"run `vecaudit db upgrade --ledger {ledger.display_url}`",
        )
    click.echo(f"ledger {ledger.display_url} is at head ({head})")


COMMANDS = [db_group]
