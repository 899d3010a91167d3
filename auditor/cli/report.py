"""``vecaudit report SCAN_ID --html FILE``: the self-contained HTML report of one scan."""

from __future__ import annotations

import click

from auditor.cli.options import info, ledger_option, open_ledger
from auditor.report.html import write_report


@click.command("report")
@click.argument("scan_id", type=int)
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False), help="Write the HTML report here.")
@click.option("--no-map", is_flag=True, help="Do not re-read the store for the 2-D map.")
@click.option(
    "--map-points", type=click.IntRange(3, 200_000), default=5000, show_default=True, help="Points drawn on the map."
)
@ledger_option
def report_command(scan_id: int, html_path: str, no_map: bool, map_points: int, ledger_url: str | None) -> None:
    """Write one scan's report as a single HTML file that opens offline (no network at view time).

    The map re-reads the collection from the store recorded with the scan (credentials from the
    environment, as for `scan`); when the store is unreachable the report is written without the map.

    \b
    Example:
      vecaudit report 12 --html report.html
    """
    ledger = open_ledger(ledger_url)
    data = write_report(ledger, scan_id, html_path, with_map=not no_map, map_points=map_points)
    ledger.dispose()
    info(f"wrote the report of scan {scan_id} ({len(data.findings)} findings) to {html_path}")
    if data.map is None and not no_map:
        info(f"  note: no map: {data.map_note}")


COMMANDS = [report_command]
