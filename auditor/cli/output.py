"""Rendering: tables (tabulate) and versioned JSON documents for findings and scans. Every free text read back
from the ledger (messages, evidence, notes, errors, review notes) is masked here, on its way out."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from tabulate import tabulate

from auditor.findings import Finding
from auditor.ledger.models import FindingOccurrenceRow, FindingRow, ReviewRow, ScanRow
from auditor.masking import redact_json, redact_text

JSON_VERSION = 1


def point_id_from_key(key: str | None) -> Any:
    return None if key is None else json.loads(key)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


#: C0/C1 control characters and DEL: a point id or tenant label written by whoever can write to the store must not
#: ring the bell, move the cursor or start an escape sequence on the auditor's terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def terminal_safe(value: Any) -> Any:
    """``value`` with every control character shown as its escape text (``\\x07``); non-strings unchanged."""
    if not isinstance(value, str):
        return value
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def emit_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    safe_rows = [[terminal_safe(cell) for cell in row] for row in rows]
    click.echo(tabulate(safe_rows, headers=list(headers), tablefmt="simple", disable_numparse=True))


def shorten(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def scan_json(scan: ScanRow) -> dict[str, Any]:
    return {
        "id": scan.id,
        "source": scan.source,
        "collection": scan.collection_name,
        "status": scan.status,
        "started_at": iso(scan.started_at),
        "finished_at": iso(scan.finished_at),
        "points_scanned": scan.points_scanned,
        "operator": scan.operator,
        "tool_version": scan.tool_version,
        "field_map": scan.field_map,
        "detectors": scan.detector_configs,
        "counts": scan.counts,
        "notes": [redact_text(n) for n in scan.notes or []],
        "error": None if scan.error is None else redact_text(scan.error),
        "incremental": scan.incremental,
    }


def finding_json(
    row: FindingRow,
    occurrence: FindingOccurrenceRow | None,
    *,
    collection: str | None = None,
    finding: Finding | None = None,
) -> dict[str, Any]:
    return {
        "id": row.id,
        "fingerprint": row.fingerprint,
        "detector": row.detector,
        "rule_id": row.rule_id,
        "title": row.title,
        "point_id": point_id_from_key(row.point_key),
        "collection": collection if collection is not None else row.collection.name,
        "tenant": row.tenant,
        "severity": row.severity,
        "confidence": row.confidence,
        "status": row.status,
        "score": occurrence.score if occurrence else None,
        "threshold": occurrence.threshold if occurrence else None,
        "message": redact_text(occurrence.message if occurrence else row.message),
        "evidence": redact_json(occurrence.evidence) if occurrence else {},
        "tags": row.tags,
        "first_seen_at": iso(row.first_seen_at),
        "last_seen_at": iso(row.last_seen_at),
    }


def review_json(review: ReviewRow) -> dict[str, Any]:
    """One human verdict; the reviewer's note masked (a note may quote the value it is about)."""
    note = None if review.note is None else redact_text(review.note)
    return {"reviewer": review.reviewer, "verdict": review.verdict, "note": note, "at": iso(review.created_at)}


def finding_table_rows(items: Sequence[tuple[FindingRow, FindingOccurrenceRow | None]]) -> list[list[Any]]:
    return finding_rows_from_json([finding_json(row, occ) for row, occ in items])


def finding_rows_from_json(findings: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Table rows from finding documents (as ``finding_json`` makes them)."""
    return [
        [
            f["id"],
            f["severity"].upper(),
            f["rule_id"],
            f["detector"],
            "(collection)" if f["point_id"] is None else str(f["point_id"]),
            f["tenant"] or "",
            "" if f["score"] is None else f"{f['score']:.3g}",
            f["status"],
            shorten(f["message"], 60),
        ]
        for f in findings
    ]


FINDING_HEADERS = ("id", "severity", "rule", "detector", "point", "tenant", "score", "status", "message")
