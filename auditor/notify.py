"""``scan --notify URL``: POST a JSON summary of a scan's *new alerting* findings to a webhook (Slack-compatible
``text`` field included), so a scheduled scan only makes noise when something changed: a finding is posted once,
in the scan that first sees it, and only when it alerts (auditor.alerting: after the baseline, HIGH findings and
MEDIUM ones about new or changed points; ``--alert-on all`` posts every new finding). Messages and errors are
masked. Sits below the engine: it reads a scan's outcome through :class:`ScanOutcome` and imports no engine code."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from auditor import __version__
from auditor.findings import point_key
from auditor.ledger.repository import RecordedFinding
from auditor.masking import redact_text
from auditor.types import Severity

log = logging.getLogger(__name__)

#: Findings listed one by one in the payload; the rest are counted.
MAX_LISTED = 100


class ScanOutcome(Protocol):
    """What a notification needs of a finished scan (``auditor.engine.ScanResult`` has it)."""

    @property
    def scan_id(self) -> int: ...

    @property
    def status(self) -> str: ...

    @property
    def points_scanned(self) -> int: ...

    @property
    def findings(self) -> Sequence[RecordedFinding]: ...

    @property
    def error(self) -> str | None: ...


def summary_payload(result: ScanOutcome, *, collection: str, source: str) -> dict[str, Any]:
    """The webhook document: ``{"version": 1, "event": "vecaudit.scan", "scan": {...}, "new_findings": [...]}``;
    ``quiet_new_findings_total`` counts the new findings that were recorded without alerting."""
    new = [r for r in result.findings if r.is_new and r.alert]
    quiet = sum(1 for r in result.findings if r.is_new and not r.alert)
    new.sort(key=lambda r: (-r.finding.effective_severity.rank, r.finding.rule_id, str(r.finding.point_id)))
    by_severity: dict[str, int] = {}
    for r in new:
        sev = r.finding.effective_severity.value
        by_severity[sev] = by_severity.get(sev, 0) + 1
    sev_text = ", ".join(
        f"{by_severity[s.value]} {s.value}" for s in sorted(Severity, key=lambda s: -s.rank) if s.value in by_severity
    )
    text = (
        f"vecaudit scan {result.scan_id} of {collection}: {result.status}, "
        f"{len(new)} new finding(s)" + (f" ({sev_text})" if sev_text else "")
    )
    return {
        "version": 1,
        "event": "vecaudit.scan",
        "text": text,
        "tool_version": __version__,
        "scan": {
            "id": result.scan_id,
            "collection": collection,
            "source": source,
            "status": result.status,
            "points_scanned": result.points_scanned,
            "findings": len(result.findings),
            "error": None if result.error is None else redact_text(result.error),
        },
        "new_findings_total": len(new),
        "new_by_severity": by_severity,
        "quiet_new_findings_total": quiet,
        "new_findings": [
            {
                "finding_id": r.row_id,
                "fingerprint": r.fingerprint,
                "rule_id": r.finding.rule_id,
                "title": r.finding.rule.title,
                "severity": r.finding.effective_severity.value,
                "detector": r.finding.detector,
                "point_id": None if r.finding.point_id is None else json.loads(point_key(r.finding.point_id)),
                "tenant": r.finding.tenant,
                "score": float(r.finding.score),
                "message": redact_text(r.finding.message),
                "tags": list(r.finding.tags),
                "alert_reason": redact_text(r.alert_reason),  # it quotes point ids
            }
            for r in new[:MAX_LISTED]
        ],
        "truncated": len(new) > MAX_LISTED,
    }


def should_notify(result: ScanOutcome) -> bool:
    """Post when there are new alerting findings or the scan did not complete (a silent failure is worse)."""
    return result.status != "completed" or any(r.is_new and r.alert for r in result.findings)


def post_json(url: str, document: dict[str, Any], *, timeout: float = 10.0, attempts: int = 3) -> str | None:
    """POST ``document``; None on a 2xx answer, else the last error as text (never raises)."""
    body = json.dumps(document, default=str).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"vecaudit/{__version__}"},
    )
    error = "not sent"
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return None
                error = f"HTTP {response.status}"
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                break  # the hook refused the request; retrying will not help
        except (urllib.error.URLError, OSError) as e:
            error = str(getattr(e, "reason", e))
        log.debug("notify attempt %d to webhook failed: %s", attempt + 1, error)
    return error
