"""``vecaudit findings list|show|label|stats``: read and label the ledger's findings; how reviewers judged each
rule."""

from __future__ import annotations

import getpass
import json

import click
from sqlalchemy.orm import Session

from auditor.calibration import review_stats
from auditor.cli.options import (
    format_option,
    info,
    ledger_option,
    open_ledger,
    severity_type,
    status_filter_options,
    statuses_from,
)
from auditor.cli.output import (
    FINDING_HEADERS,
    emit_json,
    emit_table,
    finding_json,
    finding_table_rows,
    iso,
    review_json,
)
from auditor.errors import ConfigError
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingRow
from auditor.masking import redact_text
from auditor.types import Severity

VERDICT_CHOICES = ("confirmed", "false_positive", "accepted", "open", "resolved")


def reviewer_name(flag: str | None) -> str:
    if flag:
        return flag
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


@click.group("findings")
def findings_group() -> None:
    """List, show and label findings recorded in the ledger."""


@findings_group.command("list")
@ledger_option
@click.option("--severity", type=severity_type(), help="At or above this severity.")
@status_filter_options
@click.option("--detector", "detectors", multiple=True, help="Only this detector (repeatable).")
@click.option("--rule", "rules", multiple=True, help="Only this rule id (repeatable).")
@click.option("--scan", "scan_id", type=int, help="Only findings that occurred in this scan.")
@click.option("--collection", help="Only this collection.")
@click.option("--tenant", help="Only this tenant.")
@click.option("--limit", type=int, help="At most this many.")
@format_option("table", "json")
def list_command(
    ledger_url: str | None,
    severity: str | None,
    statuses: tuple[str, ...],
    show_all: bool,
    detectors: tuple[str, ...],
    rules: tuple[str, ...],
    scan_id: int | None,
    collection: str | None,
    tenant: str | None,
    limit: int | None,
    fmt: str,
) -> None:
    """List findings, newest evidence first per finding.

    \b
    Example:
      vecaudit findings list --severity high
      vecaudit findings list --status open --format json | jq '.findings[].point_id'
    """
    ledger = open_ledger(ledger_url)
    status = statuses_from(statuses, show_all)
    flt = repo.FindingFilter(
        severity=Severity.parse(severity) if severity else None,
        status=status,
        detector=detectors or None,
        rule_id=rules or None,
        scan_id=scan_id,
        collection=collection,
        tenant=tenant,
        limit=limit,
    )
    with ledger.session() as s:
        rows = repo.query_findings(s, flt)
        occurrences = repo.latest_occurrences(s, [r.id for r in rows], scan_id)
        items = [(r, occurrences.get(r.id)) for r in rows]
        if fmt == "json":
            emit_json({"version": 1, "findings": [finding_json(r, o) for r, o in items]})
        elif items:
            emit_table(finding_table_rows(items), FINDING_HEADERS)
        else:
            info("no findings match")


def load_finding(session: Session, finding_id: int) -> FindingRow:
    row = session.get(FindingRow, finding_id)
    if row is None:
        raise ConfigError(f"no finding with id {finding_id}", hint="see `vecaudit findings list`")
    return row


@findings_group.command("show")
@click.argument("finding_id", type=int)
@ledger_option
@format_option("text", "json")
def show_command(finding_id: int, ledger_url: str | None, fmt: str) -> None:
    """Show one finding: evidence, occurrences across scans, reviews and quarantine actions.

    \b
    Example:
      vecaudit findings show 12
    """
    ledger = open_ledger(ledger_url)
    with ledger.session() as s:
        row = load_finding(s, finding_id)
        occ = repo.latest_occurrence(s, row.id)
        doc = finding_json(row, occ)
        doc["occurrences"] = [
            {"scan_id": o.scan_id, "score": o.score, "threshold": o.threshold} for o in row.occurrences
        ]
        doc["reviews"] = [review_json(r) for r in row.reviews]
        history = repo.point_history(s, [row.point_key]) if row.point_key else {"quarantine": []}
        doc["quarantine"] = [
            {
                "action_id": a.id,
                "mode": a.mode,
                "state": a.state,
                "actor": a.actor,
                "at": iso(a.created_at),
                "applied_at": iso(a.applied_at),
                "finding_ids": a.finding_ids,
                "error": None if a.error is None else redact_text(a.error),
                "released_by": a.released_by,
                "released_at": iso(a.released_at),
            }
            for a in history["quarantine"]
            if row.id in (a.finding_ids or [])
        ]
    if fmt == "json":
        emit_json({"version": 1, "finding": doc})
        return
    click.echo(f"finding {doc['id']}  {doc['severity'].upper()}  {doc['rule_id']} {doc['title']}")
    for key in (
        "detector",
        "point_id",
        "collection",
        "tenant",
        "status",
        "confidence",
        "score",
        "threshold",
        "first_seen_at",
        "last_seen_at",
        "fingerprint",
    ):
        click.echo(f"  {key:14} {doc[key]}")
    click.echo(f"  {'message':14} {doc['message']}")
    click.echo(f"  {'tags':14} {', '.join(doc['tags'])}")
    click.echo("  evidence:")
    for line in json.dumps(doc["evidence"], indent=2, ensure_ascii=False, default=str).splitlines():
        click.echo(f"    {line}")
    click.echo(f"  seen in scans: {', '.join(str(o['scan_id']) for o in doc['occurrences'])}")
    for r in doc["reviews"]:
        click.echo(f"  review: {r['at']} {r['reviewer']} -> {r['verdict']}" + (f" ({r['note']})" if r["note"] else ""))
    for a in doc["quarantine"]:
        click.echo(
            f"  quarantine #{a['action_id']}: {a['mode']} {a['state']} by {a['actor']} at {a['at']}"
            + (f", released by {a['released_by']} at {a['released_at']}" if a["released_at"] else "")
            + (f" ({a['error']})" if a["error"] else "")
        )


@findings_group.command("label")
@click.argument("finding_ids", type=int, nargs=-1, required=True)
@click.option("--verdict", required=True, type=click.Choice(VERDICT_CHOICES), help="The review verdict.")
@click.option("--note", help="Why (kept in the append-only review log).")
@click.option("--reviewer", help="Reviewer name [OS user].")
@ledger_option
def label_command(
    finding_ids: tuple[int, ...], verdict: str, note: str | None, reviewer: str | None, ledger_url: str | None
) -> None:
    """Record a verdict on findings without the interactive review.

    A false_positive or accepted finding stays so in later scans unless its point changes.

    \b
    Example:
      vecaudit findings label 7 8 --verdict false_positive --note "known duplicate import"
    """
    ledger = open_ledger(ledger_url)
    who = reviewer_name(reviewer)
    with ledger.session() as s:
        for fid in finding_ids:
            load_finding(s, fid)
        for fid in finding_ids:
            repo.add_review(s, finding_id=fid, reviewer=who, verdict=verdict, note=note)
    info(f"labelled {len(finding_ids)} finding(s) {verdict} as {who}")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@findings_group.command("stats")
@ledger_option
@click.option("--collection", help="Only this collection (name or key).")
@format_option("table", "json")
def stats_command(ledger_url: str | None, collection: str | None, fmt: str) -> None:
    """How reviewers judged each detector's findings, per rule: confirmed (quarantined included),
    false_positive, accepted, still open or resolved unreviewed, and precision = confirmed /
    (confirmed + false_positive) with its Wilson 95% interval.

    \b
    Example:
      vecaudit findings stats
      vecaudit findings stats --collection docs --format json | jq '.rules[] | {rule_id, precision}'
    """
    ledger = open_ledger(ledger_url)
    with ledger.session() as s:
        rules = review_stats(repo.review_counts(s, collection=collection))
    if fmt == "json":
        emit_json({"version": 1, "collection": collection, "rules": rules})
        return
    if not rules:
        info("no findings" + (f" in collection {collection!r}" if collection else ""))
        return
    headers = ("detector", "rule", "findings", "confirmed", "false_pos", "accepted", "open", "resolved",
               "precision", "95% interval")
    rows = [
        [
            r["detector"], r["rule_id"], r["findings"], r["confirmed"], r["false_positive"], r["accepted"],
            r["open"], r["resolved"], _ratio(r["precision"]),
            "-" if r["precision_low"] is None else f"{r['precision_low']:.2f}-{r['precision_high']:.2f}",
        ]
        for r in rules
    ]
    emit_table(rows, headers)


COMMANDS = [findings_group]
