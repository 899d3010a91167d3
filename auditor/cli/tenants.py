"""``vecaudit tenants``: per-tenant counts, unlabeled points and the from→to matrix of cross-tenant findings."""

from __future__ import annotations

import click

from auditor.cli.options import format_option, ledger_option, open_ledger
from auditor.cli.output import emit_json
from auditor.tenancy import build_report


@click.command("tenants")
@ledger_option
@click.option("--collection", help="Collection name or ledger key (needed when the ledger holds several).")
@format_option("table", "json")
def tenants_command(ledger_url: str | None, collection: str | None, fmt: str) -> None:
    """Tenant report of a scanned collection, from the ledger.

    Points per tenant and unlabeled points (latest recorded version of every live point), then a
    from→to matrix of cross-tenant copies, misfiled documents and foreign tenant markers found by the
    latest completed scan (findings marked false_positive, accepted or resolved are left out).

    \b
    Example:
      vecaudit scan qdrant+local:///data/store --collection docs --text-field text --tenant-field tenant
      vecaudit tenants --collection docs
      vecaudit tenants --format json | jq '.matrix.copies'
    """
    ledger = open_ledger(ledger_url)
    try:
        with ledger.session() as s:
            report = build_report(s, collection)
    finally:
        ledger.dispose()
    if fmt == "json":
        emit_json(report.as_dict())
    else:
        click.echo(report.tables())


COMMANDS = (tenants_command,)
