"""Shared click options (as decorators) and how the ledger URL is chosen: flag > env > config > default."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from auditor.config import Config, load_config
from auditor.ledger import Ledger
from auditor.ledger.session import default_ledger_url
from auditor.types import Severity

F = TypeVar("F", bound=Callable[..., Any])


def ledger_option(fn: F) -> F:
    return click.option(
        "--ledger",
        "ledger_url",
        metavar="URL",
        help="Ledger database URL (default: $VECAUDIT_LEDGER, the config's `ledger`, else sqlite:///vecaudit.db).",
    )(fn)


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="Configuration file (default: ./vecaudit.toml when present).",
    )(fn)


def format_option(*choices: str) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(list(choices)),
            default=choices[0],
            show_default=True,
            help="Output format (data goes to stdout, messages to stderr).",
        )(fn)

    return deco


def severity_type() -> click.Choice:
    return click.Choice([s.value for s in Severity], case_sensitive=False)


def resolve_ledger_url(flag: str | None, config: Config | None = None) -> str:
    if flag:
        return flag
    if os.environ.get("VECAUDIT_LEDGER"):
        return default_ledger_url()
    if config is not None and config.ledger:
        return config.ledger
    return default_ledger_url()


def open_ledger(flag: str | None, config_path: str | None = None) -> Ledger:
    """An existing ledger, schema-checked (exit 4 with the upgrade command when behind head, or when a SQLite
    path holds no ledger: only `scan` and `db upgrade` create one)."""
    config = load_config(config_path) if config_path or not flag else None
    return Ledger(resolve_ledger_url(flag, config)).open(create=False)


def is_quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.obj and ctx.obj.get("quiet"):
            return True
        ctx = ctx.parent
    return False


def info(message: str) -> None:
    """An informational line on stderr, suppressed by -q."""
    if not is_quiet():
        click.echo(message, err=True)


def status_filter_options(fn: F) -> F:
    """``--status`` (repeatable) and ``--all``: which review statuses a findings listing includes."""
    from auditor.ledger.models import REVIEW_STATUSES

    fn = click.option("--all", "show_all", is_flag=True, help="Include resolved findings.")(fn)
    return click.option(
        "--status",
        "statuses",
        multiple=True,
        type=click.Choice(REVIEW_STATUSES),
        help="Only these review statuses (repeatable) [default: all but resolved].",
    )(fn)


def statuses_from(statuses: tuple[str, ...], show_all: bool) -> list[str] | None:
    """The statuses a listing asked for: the given ones, every one with ``--all``, else all but resolved."""
    from auditor.ledger.models import REVIEW_STATUSES

    return list(statuses) or (None if show_all else [s for s in REVIEW_STATUSES if s != "resolved"])
