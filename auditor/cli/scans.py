"""``vecaudit scans list|show``: the scan log of the ledger."""

from __future__ import annotations

import click

from auditor.cli.options import format_option, info, ledger_option, open_ledger
from auditor.cli.output import emit_json, emit_table, iso, scan_json
from auditor.errors import ConfigError
from auditor.ledger import repository as repo
from auditor.ledger.models import ScanRow
from auditor.scanlock import mark_abandoned_scans


@click.group("scans")
def scans_group() -> None:
    """List and show recorded scans."""


@scans_group.command("list")
@ledger_option
@click.option("--collection", help="Only scans of this collection.")
@click.option("--limit", type=int, default=20, show_default=True)
@format_option("table", "json")
def list_command(ledger_url: str | None, collection: str | None, limit: int, fmt: str) -> None:
    """List scans, newest first. A scan whose process was killed is shown (and recorded) as abandoned.

    \b
    Example:
      vecaudit scans list --collection docs
    """
    ledger = open_ledger(ledger_url)
    mark_abandoned_scans(ledger)
    with ledger.session() as s:
        scans = repo.list_scans(s, collection=collection, limit=limit)
        if fmt == "json":
            emit_json({"version": 1, "scans": [scan_json(x) for x in scans]})
            return
        if not scans:
            info("no scans recorded yet")
            return
        rows = [
            [
                x.id,
                (iso(x.started_at) or "")[:19],
                x.collection_name,
                x.status,
                x.points_scanned,
                x.counts.get("findings", 0),
                x.operator or "",
                x.source,
            ]
            for x in scans
        ]
        emit_table(rows, ["id", "started (UTC)", "collection", "status", "points", "findings", "operator", "source"])


@scans_group.command("show")
@click.argument("scan_id", type=int)
@ledger_option
@format_option("text", "json")
def show_command(scan_id: int, ledger_url: str | None, fmt: str) -> None:
    """Show one scan: counts, detector settings, notes and errors.

    \b
    Example:
      vecaudit scans show 3 --format json
    """
    ledger = open_ledger(ledger_url)
    mark_abandoned_scans(ledger)
    with ledger.session() as s:
        scan = s.get(ScanRow, scan_id)
        if scan is None:
            raise ConfigError(f"no scan with id {scan_id}", hint="see `vecaudit scans list`")
        doc = scan_json(scan)
        doc["summary"] = repo.scan_finding_summary(s, scan_id)
    if fmt == "json":
        emit_json({"version": 1, "scan": doc})
        return
    click.echo(f"scan {doc['id']}  {doc['status']}  {doc['collection']}  ({doc['source']})")
    for key in ("started_at", "finished_at", "points_scanned", "operator", "tool_version", "error"):
        click.echo(f"  {key:15} {doc[key]}")
    click.echo(f"  {'field map':15} {', '.join(f'{k}={v}' for k, v in doc['field_map'].items() if v)}")
    click.echo(f"  {'detectors':15} {', '.join(d['name'] for d in doc['detectors'])}")
    counts = {k: v for k, v in doc["counts"].items() if not isinstance(v, dict)}
    click.echo(f"  {'counts':15} {', '.join(f'{k}={v}' for k, v in counts.items())}")
    for kind in ("by_detector", "by_severity"):
        if doc["summary"][kind]:
            click.echo(f"  {kind:15} {', '.join(f'{k}={v}' for k, v in sorted(doc['summary'][kind].items()))}")
    for note in doc["notes"]:
        click.echo(f"  note: {note}")


COMMANDS = [scans_group]
