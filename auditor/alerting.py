"""Which of a scan's findings *alert* (count for the exit code and ``--notify``) and why.

Monitoring mode is quiet by default (``alert_on = "changed"``): the first scan of a collection is the baseline
and every finding alerts; after it, a finding alerts only when it is HIGH or above, or MEDIUM and involves a
point that is new or changed since the last completed scan (the point itself or a member its evidence names).
A MEDIUM finding that was LOW or INFO in the last scan (e.g. back above a review-calibrated line) alerts once too.
Everything else is still recorded, listed and reviewable — it just does not wake anybody up again.
``alert_on = "all"`` is the old behaviour: every finding that is not silenced by a review alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from auditor.findings import Finding, point_key
from auditor.types import Severity

ALERT_MODES = ("changed", "all")
DEFAULT_ALERT_ON = "changed"

#: Evidence keys whose values name the other points a finding is about (group members, copies, sources).
_MEMBER_KEYS = ("members", "members_with_question", "points", "others", "different_text", "exact_copies", "sources")


def involved_point_keys(finding: Finding) -> set[str]:
    """Point keys a finding is about: its own point plus the points its evidence names as members."""
    keys: set[str] = set()
    if finding.point_id is not None:
        keys.add(point_key(finding.point_id))
    for name in _MEMBER_KEYS:
        keys.update(_keys_in(finding.evidence.get(name)))
    return keys


def _keys_in(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        if "id" in value and isinstance(value["id"], (int, str)):
            yield point_key(value["id"])
    elif isinstance(value, (list, tuple)):
        for item in value:
            if isinstance(item, (int, str)) and not isinstance(item, bool):
                yield point_key(item)
            else:
                yield from _keys_in(item)


def alert_decision(
    finding: Finding,
    *,
    status: str,
    is_new: bool,
    previous_severity: str | None = None,
    mode: str,
    baseline: bool,
    changed_points: set[str],
    silenced: Sequence[str],
) -> tuple[bool, str]:
    """``(alerts, why)`` for one recorded finding of a completed scan."""
    severity = finding.effective_severity
    if status in silenced:
        return False, f"reviewed as {status}: listed, never alerts"
    if mode == "all":
        return True, "alert-on all: every active finding alerts"
    if baseline:
        return True, "baseline: first scan of this collection"
    if severity >= Severity.HIGH:
        return True, f"{severity.value}: always alerts"
    if severity < Severity.MEDIUM:
        why = " (below its review-calibrated line)" if "calibration" in finding.evidence else ""
        return False, f"{severity.value}{why}: listed for review, does not alert"
    involved = involved_point_keys(finding) & changed_points
    if involved:
        shown = ", ".join(sorted(involved)[:3]) + (" ..." if len(involved) > 3 else "")
        return True, f"involves point(s) new or changed since the last scan: {shown}"
    if finding.point_id is None and is_new:
        return True, "new collection-level finding"
    if previous_severity is not None and Severity(previous_severity) < Severity.MEDIUM:
        return True, f"raised from {previous_severity} since the last scan"
    return False, "no point new or changed since the last scan: listed, does not alert (--alert-on all alerts)"
