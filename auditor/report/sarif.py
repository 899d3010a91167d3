"""SARIF 2.1.0 log of vecaudit findings: one run, rules with OWASP/ATLAS tags and GitHub security severity,
results located logically (collection / tenant / point) since vector-store points are not files."""

from __future__ import annotations

import re
from typing import Any

from auditor import __version__
from auditor.cli.output import iso, point_id_from_key
from auditor.ledger.models import FindingOccurrenceRow, FindingRow
from auditor.masking import redact_json, redact_text
from auditor.report.export import ExportSet

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/vecaudit/vecaudit"

_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
#: GitHub code scanning reads ``security-severity`` (0-10) to rank security results.
_SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "1.0"}
_SUPPRESSED = {"false_positive": "rejected", "accepted": "accepted"}


def _rule_name(title: str) -> str:
    """A SARIF ``name``: the title in PascalCase (``Vector has NaN ...`` -> ``VectorHasNanOr...``)."""
    return "".join(w[:1].upper() + w[1:].lower() for w in re.findall(r"[A-Za-z0-9]+", title))


def _rule(row: FindingRow) -> dict[str, Any]:
    return {
        "id": row.rule_id,
        "name": _rule_name(row.title),
        "shortDescription": {"text": row.title},
        "fullDescription": {"text": f"{row.title} (detector {row.detector})."},
        "defaultConfiguration": {"level": _LEVEL[row.severity]},
        "properties": {
            "tags": ["security", *row.tags],
            "security-severity": _SECURITY_SEVERITY[row.severity],
            "detector": row.detector,
            "precision": {"high": "high", "medium": "medium", "low": "low"}[row.confidence],
        },
    }


def _result(row: FindingRow, occ: FindingOccurrenceRow | None, rule_index: int, scan_id: int | None) -> dict[str, Any]:
    point = point_id_from_key(row.point_key)
    collection = row.collection.name
    where = "/".join([collection, row.tenant or "(no tenant)", "(collection)" if point is None else str(point)])
    result: dict[str, Any] = {
        "ruleId": row.rule_id,
        "ruleIndex": rule_index,
        "level": _LEVEL[row.severity],
        "message": {"text": redact_text(occ.message if occ is not None else row.message)},
        "locations": [
            {
                "logicalLocations": [
                    {"name": collection if point is None else str(point), "fullyQualifiedName": where, "kind": "object"}
                ],
                "message": {"text": f"collection {row.collection.key}"},
            }
        ],
        "partialFingerprints": {"vecauditFinding/v1": row.fingerprint},
        "properties": {
            "findingId": row.id,
            "collection": collection,
            "collectionKey": row.collection.key,
            "pointId": point,
            "tenant": row.tenant,
            "severity": row.severity,
            "confidence": row.confidence,
            "reviewStatus": row.status,
            "score": occ.score if occ is not None else None,
            "threshold": occ.threshold if occ is not None else None,
            "evidence": redact_json(occ.evidence) if occ is not None else {},
            "firstSeen": iso(row.first_seen_at),
            "lastSeen": iso(row.last_seen_at),
            "tags": list(row.tags),
        },
    }
    if scan_id is not None:
        result["baselineState"] = "new" if row.first_scan_id == scan_id else "unchanged"
    if row.status in _SUPPRESSED:
        last = row.reviews[-1] if row.reviews else None
        suppression: dict[str, Any] = {"kind": "external", "status": _SUPPRESSED[row.status]}
        if last is not None and last.note:
            suppression["justification"] = redact_text(last.note)
        result["suppressions"] = [suppression]
    return result


def sarif_log(data: ExportSet) -> dict[str, Any]:
    """The SARIF 2.1.0 document (a dict ready for ``json.dump``) of the exported findings."""
    rules: dict[str, int] = {}
    rule_list: list[dict[str, Any]] = []
    results = []
    scan_id = data.scan.id if data.scan is not None else None
    for row, occ in data.items:
        if row.rule_id not in rules:
            rules[row.rule_id] = len(rule_list)
            rule_list.append(_rule(row))
        results.append(_result(row, occ, rules[row.rule_id], scan_id))
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "vecaudit",
                "version": __version__,
                "semanticVersion": __version__,
                "informationUri": INFORMATION_URI,
                "rules": rule_list,
            }
        },
        "results": results,
        "columnKind": "unicodeCodePoints",
    }
    scan = data.scan
    if scan is not None:
        run["automationDetails"] = {"id": f"vecaudit/{scan.collection_name}/scan-{scan.id}"}
        invocation: dict[str, Any] = {
            "executionSuccessful": scan.status == "completed",
            "startTimeUtc": iso(scan.started_at),
            "properties": {"scanId": scan.id, "status": scan.status, "pointsScanned": scan.points_scanned},
        }
        if scan.finished_at is not None:
            invocation["endTimeUtc"] = iso(scan.finished_at)
        if scan.error:
            error = {"message": {"text": redact_text(scan.error)}, "level": "error"}
            invocation["toolExecutionNotifications"] = [error]
        run["invocations"] = [invocation]
        run["properties"] = {"source": scan.source, "collection": scan.collection_name}
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}
