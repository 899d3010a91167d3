"""``vecaudit review``: walk open findings interactively; each verdict is committed the moment it is given."""

from __future__ import annotations

import json

import click

from auditor.cli.findings import reviewer_name
from auditor.cli.options import info, ledger_option, open_ledger, severity_type
from auditor.cli.output import point_id_from_key, shorten
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingRow
from auditor.masking import redact_json, redact_text
from auditor.types import Severity

CHOICES = {"c": "confirmed", "f": "false_positive", "a": "accepted", "s": None, "q": None}
PROMPT = "[c]onfirm  [f]alse positive  [a]ccept risk  [s]kip  [q]uit"


@click.command("review")
@ledger_option
@click.option("--severity", type=severity_type(), help="Only findings at or above this severity.")
@click.option("--detector", "detectors", multiple=True, help="Only this detector (repeatable).")
@click.option("--scan", "scan_id", type=int, help="Only findings from this scan.")
@click.option("--reviewer", help="Reviewer name [OS user].")
@click.option("--note/--no-note", default=False, help="Ask for a note with each verdict.")
def review_command(
    ledger_url: str | None,
    severity: str | None,
    detectors: tuple[str, ...],
    scan_id: int | None,
    reviewer: str | None,
    note: bool,
) -> None:
    """Review open findings one by one (highest severity first).

    Each answer is written to the ledger at once, so quitting loses nothing.

    \b
    Example:
      vecaudit review --severity medium --reviewer alice
    """
    ledger = open_ledger(ledger_url)
    who = reviewer_name(reviewer)
    flt = repo.FindingFilter(
        severity=Severity.parse(severity) if severity else None,
        status=["open"],
        detector=detectors or None,
        scan_id=scan_id,
    )
    with ledger.session() as s:
        rows = repo.query_findings(s, flt)
        ids = [r.id for r in sorted(rows, key=lambda r: (-Severity(r.severity).rank, r.id))]
    if not ids:
        info("nothing to review: no open findings match")
        return
    done = 0
    for n, fid in enumerate(ids, 1):
        with ledger.session() as s:
            row = s.get(FindingRow, fid)
            if row is None or row.status != "open":
                continue  # labelled meanwhile (another reviewer)
            occ = repo.latest_occurrence(s, fid)
            click.echo("")
            click.echo(f"[{n}/{len(ids)}] finding {fid}  {row.severity.upper()}  {row.rule_id}  {row.title}")
            click.echo(
                f"  point {point_id_from_key(row.point_key)}  tenant {row.tenant or '-'}  detector {row.detector}"
            )
            click.echo(f"  {redact_text(occ.message if occ else row.message)}")
            if occ and occ.evidence:
                evidence = json.dumps(redact_json(occ.evidence), ensure_ascii=False, default=str)
                click.echo(f"  evidence: {shorten(evidence, 300)}")
        answer = click.prompt(PROMPT, type=click.Choice(list(CHOICES)), show_choices=False)
        if answer == "q":
            break
        verdict = CHOICES[answer]
        if verdict is None:
            continue
        text = click.prompt("note", default="", show_default=False) if note else None
        with ledger.session() as s:
            repo.add_review(s, finding_id=fid, reviewer=who, verdict=verdict, note=text or None)
        done += 1
    info(f"{done} verdict(s) recorded as {who}")


COMMANDS = [review_command]
