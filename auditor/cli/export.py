"""``vecaudit findings export``: the ledger's findings as SARIF 2.1.0 (code-scanning dashboards) or JSON."""

from __future__ import annotations

import json

import click

from auditor.cli.findings import findings_group
from auditor.cli.options import info, ledger_option, open_ledger, severity_type, status_filter_options, statuses_from
from auditor.ledger import repository as repo
from auditor.report.export import collect, json_document
from auditor.report.sarif import sarif_log
from auditor.types import Severity


@findings_group.command("export")
@ledger_option
@click.option(
    "--format", "fmt", type=click.Choice(["sarif", "json"]), default="sarif", show_default=True, help="Document format."
)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.option("--scan", "scan_id", type=int, help="Only findings of this scan, with that scan's scores and evidence.")
@click.option("--collection", help="Only this collection.")
@click.option("--severity", type=severity_type(), help="At or above this severity.")
@status_filter_options
def export_command(
    ledger_url: str | None,
    fmt: str,
    output: str | None,
    scan_id: int | None,
    collection: str | None,
    severity: str | None,
    statuses: tuple[str, ...],
    show_all: bool,
) -> None:
    """Export findings as SARIF 2.1.0 or as a versioned JSON document.

    SARIF results carry the finding fingerprint (partialFingerprints), review verdicts as suppressions,
    and OWASP LLM Top 10 / MITRE ATLAS tags on the rules.

    \b
    Example:
      vecaudit findings export --format sarif --scan 12 -o vecaudit.sarif
      vecaudit findings export --format json --severity high | jq '.findings[].rule_id'
    """
    ledger = open_ledger(ledger_url)
    status = statuses_from(statuses, show_all)
    flt = repo.FindingFilter(
        severity=Severity.parse(severity) if severity else None,
        status=status,
        scan_id=scan_id,
        collection=collection,
    )
    with ledger.session() as s:
        data = collect(s, flt)
        document = sarif_log(data) if fmt == "sarif" else json_document(data)
        count = len(data.items)
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        info(f"wrote {count} finding(s) as {fmt} to {output}")
    else:
        click.echo(text)
    ledger.dispose()


COMMANDS: list[click.Command] = []  # registered on the `findings` group above
