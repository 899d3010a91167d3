"""Findings read back from the ledger for export (JSON document, SARIF): one scan's findings with that scan's
occurrence, or the current findings of the ledger (newest occurrence each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from auditor import __version__
from auditor.cli.output import finding_json, review_json, scan_json
from auditor.errors import ConfigError
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingOccurrenceRow, FindingRow, ScanRow

JSON_EXPORT_VERSION = 1


@dataclass
class ExportSet:
    """Findings with the occurrence that is exported, and the scan they come from (None: ledger-wide)."""

    items: list[tuple[FindingRow, FindingOccurrenceRow | None]]
    scan: ScanRow | None = None
    scans: dict[int, ScanRow] = field(default_factory=dict)


def collect(session: Session, flt: repo.FindingFilter) -> ExportSet:
    """Findings matching ``flt``; with ``flt.scan_id`` each carries that scan's occurrence."""
    scan = None
    if flt.scan_id is not None:
        scan = session.get(ScanRow, flt.scan_id)
        if scan is None:
            raise ConfigError(f"no scan with id {flt.scan_id}", hint="see `vecaudit scans list`")
    rows = repo.query_findings(session, flt)
    occurrences = repo.latest_occurrences(session, [row.id for row in rows], flt.scan_id)
    items = [(row, occurrences.get(row.id)) for row in rows]
    scans = {s.id: s for s in {session.get(ScanRow, occ.scan_id) for _, occ in items if occ is not None} if s}
    if scan is not None:
        scans[scan.id] = scan
    return ExportSet(items=items, scan=scan, scans=scans)


def json_document(data: ExportSet) -> dict[str, Any]:
    """``{"version": 1, "tool": ..., "exported_at": ..., "scan": {...}|null, "findings": [...]}``."""
    findings = []
    for row, occ in data.items:
        doc = finding_json(row, occ)
        doc["scan_id"] = occ.scan_id if occ is not None else None
        doc["stage"] = occ.stage if occ is not None else None
        doc["first_scan_id"] = row.first_scan_id
        doc["last_scan_id"] = row.last_scan_id
        doc["reviews"] = [review_json(r) for r in row.reviews]
        findings.append(doc)
    return {
        "version": JSON_EXPORT_VERSION,
        "tool": {"name": "vecaudit", "version": __version__},
        "exported_at": datetime.now(UTC).isoformat(),
        "scan": scan_json(data.scan) if data.scan is not None else None,
        "findings": findings,
    }
