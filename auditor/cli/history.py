"""``vecaudit history POINT_ID``: a point's provenance chain, findings, reviews and quarantine actions."""

from __future__ import annotations

from typing import Any

import click

from auditor.cli.options import format_option, info, ledger_option, open_ledger
from auditor.cli.output import emit_json, emit_table, iso, point_id_from_key, review_json
from auditor.findings import parse_point_id, point_key


@click.command("history")
@click.argument("point_id")
@ledger_option
@format_option("table", "json")
def history_command(point_id: str, ledger_url: str | None, fmt: str) -> None:
    """Everything the ledger knows about one point, oldest first.

    POINT_ID is the store's id (an integer or a UUID/string).

    \b
    Example:
      vecaudit history 42
    """
    ledger = open_ledger(ledger_url)
    keys = [point_key(c) for c in parse_point_id(point_id)]
    with ledger.session() as s:
        from auditor.ledger import repository as repo

        h = repo.point_history(s, keys)
        doc: dict[str, Any] = {
            "version": 1,
            "point_id": point_id,
            "versions": [
                {
                    "scan_id": v.scan_id,
                    "change": v.change,
                    "vector_hash": v.vector_hash,
                    "payload_hash": v.payload_hash,
                    "text_hash": v.text_hash,
                    "tenant": v.tenant,
                    "at": iso(v.recorded_at),
                    "point_id": point_id_from_key(v.point_key),
                }
                for v in h["versions"]
            ],
            "findings": [
                {
                    "id": f.id,
                    "rule_id": f.rule_id,
                    "severity": f.severity,
                    "status": f.status,
                    "title": f.title,
                    "first_scan_id": f.first_scan_id,
                    "last_scan_id": f.last_scan_id,
                    "reviews": [review_json(r) for r in f.reviews],
                }
                for f in h["findings"]
            ],
            "quarantine": [
                {
                    "action_id": a.id,
                    "mode": a.mode,
                    "state": a.state,
                    "actor": a.actor,
                    "reason": a.reason,
                    "finding_ids": a.finding_ids,
                    "at": iso(a.created_at),
                    "applied_at": iso(a.applied_at),
                    "released_by": a.released_by,
                    "released_at": iso(a.released_at),
                }
                for a in h["quarantine"]
            ],
        }
    if fmt == "json":
        emit_json(doc)
        return
    if not (doc["versions"] or doc["findings"] or doc["quarantine"]):
        info(f"the ledger knows nothing about point {point_id}")
        return
    events = []
    for v in doc["versions"]:
        what = f"{v['change']}: vector {str(v['vector_hash'])[:10]} text {str(v['text_hash'])[:10]}"
        events.append(
            [v["at"], f"scan {v['scan_id']}", "version", what + (f" tenant {v['tenant']}" if v["tenant"] else "")]
        )
    for f in doc["findings"]:
        events.append(
            [
                "",
                f"scan {f['first_scan_id']}",
                f"finding {f['id']}",
                f"{f['severity'].upper()} {f['rule_id']} {f['title']} [{f['status']}]",
            ]
        )
        for r in f["reviews"]:
            events.append(
                [r["at"], "", "review", f"{r['reviewer']}: {r['verdict']}" + (f" ({r['note']})" if r["note"] else "")]
            )
    for a in doc["quarantine"]:
        events.append(
            [
                a["at"],
                "",
                f"quarantine {a['action_id']}",
                f"{a['mode']} {a['state']} by {a['actor']}"
                + (f", released by {a['released_by']}" if a["released_by"] else ""),
            ]
        )
    emit_table([[e[0][:19] if e[0] else "", *e[1:]] for e in events], ["when (UTC)", "scan", "event", "details"])


COMMANDS = [history_command]
