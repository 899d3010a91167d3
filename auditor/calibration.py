"""Review-driven recalibration: a collection's ``false_positive`` verdicts raise that rule's alert line there.

For each rule of a collection with at least ``min_false_positives`` findings marked ``false_positive`` (given
after the last ``vecaudit calibration reset``), the next scan keeps the rule's findings whose score is at or
below the highest false-positive score — the *alert line* — as LOW, with their score and a ``calibration`` note
in the evidence: ranked and reviewable, not alerting. The line never reaches the lowest score of a confirmed
(or quarantined) finding of the same rule: what a reviewer confirmed keeps alerting. Scores are compared only
within one rule (each rule's score has its own scale; higher = more suspicious).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from auditor.findings import Finding
from auditor.ledger.models import CalibrationResetRow, FindingOccurrenceRow, FindingRow, ReviewRow
from auditor.types import Severity

#: The fewest false_positive verdicts on one rule of one collection before they move its alert line: one or two
#: labels say little about a rule's score distribution, and a single mislabel must not silence a rule.
MIN_FALSE_POSITIVES = 5
#: Statuses that count as a reviewer's confirmation (a quarantined finding was confirmed first).
CONFIRMED_STATUSES = ("confirmed", "quarantined")


@dataclass(frozen=True)
class RuleCalibration:
    """One rule's review-driven alert line on one collection."""

    rule_id: str
    detector: str
    false_positives: int
    confirmed: int
    highest_false_positive: float
    lowest_confirmed: float | None
    #: Findings of the rule scoring at or below this stay LOW; None while fewer verdicts than the minimum.
    alert_above: float | None
    #: The line was held below a confirmed finding's score.
    capped: bool

    def as_config(self) -> dict[str, Any]:
        return {
            "alert_above": self.alert_above,
            "false_positives": self.false_positives,
            "confirmed": self.confirmed,
            "highest_false_positive": self.highest_false_positive,
            "lowest_confirmed": self.lowest_confirmed,
            "capped_by_confirmed": self.capped,
        }

    def describe(self) -> str:
        if self.alert_above is None:
            return (
                f"{self.rule_id}: {self.false_positives} false_positive verdict(s), fewer than "
                f"{MIN_FALSE_POSITIVES}: not recalibrated"
            )
        cap = (
            f", held below the lowest confirmed score {self.lowest_confirmed:.4g}"
            if self.capped and self.lowest_confirmed is not None
            else ""
        )
        return (
            f"{self.rule_id} alerts only above {self.alert_above:.4g} on this collection "
            f"({self.false_positives} false_positive verdict(s), highest score {self.highest_false_positive:.4g}; "
            f"{self.confirmed} confirmed{cap})"
        )


def alert_line(false_positive_scores: list[float], confirmed_scores: list[float]) -> tuple[float, bool]:
    """``(line, capped)``: the highest false-positive score, held strictly below the lowest confirmed score."""
    line = max(false_positive_scores)
    if confirmed_scores and min(confirmed_scores) <= line:
        return math.nextafter(min(confirmed_scores), -math.inf), True
    return line, False


def _last_resets(session: Session, collection_id: int) -> dict[str | None, datetime]:
    rows = session.execute(
        select(CalibrationResetRow.rule_id, func.max(CalibrationResetRow.created_at))
        .where(CalibrationResetRow.collection_id == collection_id)
        .group_by(CalibrationResetRow.rule_id)
    )
    return {rule: at for rule, at in rows}


def rule_calibrations(
    session: Session, collection_id: int, *, min_false_positives: int = MIN_FALSE_POSITIVES
) -> dict[str, RuleCalibration]:
    """Every rule of the collection with reviewed findings, and its alert line (None below the minimum)."""
    latest_occurrence = (
        select(FindingOccurrenceRow.finding_id, func.max(FindingOccurrenceRow.id).label("occ_id"))
        .group_by(FindingOccurrenceRow.finding_id)
        .subquery()
    )
    last_review = (
        select(ReviewRow.finding_id, func.max(ReviewRow.created_at).label("at"))
        .group_by(ReviewRow.finding_id)
        .subquery()
    )
    reviewed = session.execute(
        select(FindingRow.rule_id, FindingRow.detector, FindingRow.status, FindingOccurrenceRow.score, last_review.c.at)
        .join(latest_occurrence, latest_occurrence.c.finding_id == FindingRow.id)
        .join(FindingOccurrenceRow, FindingOccurrenceRow.id == latest_occurrence.c.occ_id)
        .outerjoin(last_review, last_review.c.finding_id == FindingRow.id)
        .where(
            FindingRow.collection_id == collection_id,
            FindingRow.status.in_(("false_positive", *CONFIRMED_STATUSES)),
        )
    )
    rows = list(reviewed)
    resets = _last_resets(session, collection_id) if rows else {}
    false_pos: dict[str, list[float]] = {}
    confirmed: dict[str, list[float]] = {}
    detectors: dict[str, str] = {}
    for rule_id, detector, status, score, reviewed_at in rows:
        detectors[rule_id] = detector
        if status in CONFIRMED_STATUSES:
            # confirmations always hold the line down, reset or not
            confirmed.setdefault(rule_id, []).append(float(score))
            continue
        cut = max((t for t in (resets.get(None), resets.get(rule_id)) if t is not None), default=None)
        if cut is not None and (reviewed_at is None or _aware(reviewed_at) <= _aware(cut)):
            continue
        false_pos.setdefault(rule_id, []).append(float(score))
    out: dict[str, RuleCalibration] = {}
    for rule_id in sorted(false_pos):
        fps, oks = false_pos[rule_id], confirmed.get(rule_id, [])
        line: float | None = None
        capped = False
        if len(fps) >= min_false_positives:
            line, capped = alert_line(fps, oks)
        out[rule_id] = RuleCalibration(
            rule_id=rule_id,
            detector=detectors[rule_id],
            false_positives=len(fps),
            confirmed=len(oks),
            highest_false_positive=max(fps),
            lowest_confirmed=min(oks) if oks else None,
            alert_above=line,
            capped=capped,
        )
    return out


def active(calibrations: dict[str, RuleCalibration]) -> dict[str, RuleCalibration]:
    """The calibrations that move a line (enough verdicts)."""
    return {r: c for r, c in calibrations.items() if c.alert_above is not None}


def apply(findings: Iterable[Finding], calibrations: dict[str, RuleCalibration]) -> dict[str, int]:
    """Keep each MEDIUM+ finding of a calibrated rule whose score is at or below the line as LOW (its severity
    before is kept in ``evidence["calibration"]``); returns how many were kept LOW per rule."""
    kept: dict[str, int] = {}
    for f in findings:
        cal = calibrations.get(f.rule_id)
        if cal is None or cal.alert_above is None or "calibration" in f.evidence:
            continue
        if f.effective_severity >= Severity.MEDIUM and float(f.score) <= cal.alert_above:
            f.evidence["calibration"] = {
                "alert_above": cal.alert_above,
                "severity_before": f.effective_severity.value,
                "false_positives": cal.false_positives,
            }
            f.severity = Severity.LOW
            kept[f.rule_id] = kept.get(f.rule_id, 0) + 1
    return kept


def undo(finding: Finding) -> None:
    """Give a finding rebuilt from the ledger back its severity before calibration (incremental carry)."""
    note = finding.evidence.pop("calibration", None)
    if isinstance(note, dict) and note.get("severity_before"):
        before = Severity(note["severity_before"])
        finding.severity = None if before == finding.rule.severity else before


def reset(session: Session, collection_id: int, *, rule_id: str | None, actor: str) -> CalibrationResetRow:
    """Forget the false_positive verdicts given so far for ``rule_id`` (every rule when None)."""
    row = CalibrationResetRow(collection_id=collection_id, rule_id=rule_id, actor=actor)
    session.add(row)
    session.flush()
    return row


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- review statistics (``vecaudit findings stats``) -----------------------------------------------------------

#: z of a two-sided 95% normal interval.
_Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (None without trials). Hand-written: three lines of
    arithmetic do not justify statsmodels as a dependency, and Wilson stays inside [0, 1] at 0 or n successes."""
    if trials <= 0:
        return None
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


#: How each finding status is counted in the statistics.
STAT_BUCKETS = {
    "confirmed": "confirmed",
    "quarantined": "confirmed",
    "false_positive": "false_positive",
    "accepted": "accepted",
    "open": "open",
    "resolved": "resolved",
}


def review_stats(rows: Iterable[tuple[str, str, str, str, int]]) -> list[dict[str, Any]]:
    """Per detector and rule: findings, verdict counts, precision = confirmed / (confirmed + false_positive)
    with its Wilson 95% interval. ``rows`` as :func:`auditor.ledger.repository.review_counts` returns them."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for detector, rule_id, title, status, count in rows:
        entry = table.setdefault(
            (detector, rule_id),
            {"detector": detector, "rule_id": rule_id, "title": title, "findings": 0,
             **{b: 0 for b in dict.fromkeys(STAT_BUCKETS.values())}},
        )
        entry["findings"] += count
        entry[STAT_BUCKETS.get(status, "open")] += count
    out = []
    for key in sorted(table):
        entry = table[key]
        judged = entry["confirmed"] + entry["false_positive"]
        entry["reviewed"] = judged + entry["accepted"]
        entry["precision"] = entry["confirmed"] / judged if judged else None
        interval = wilson_interval(entry["confirmed"], judged)
        entry["precision_low"], entry["precision_high"] = interval if interval else (None, None)
        out.append(entry)
    return out
