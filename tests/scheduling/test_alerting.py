"""Which findings alert after the baseline (auditor.alerting), rule by rule of the decision, plus the alert line
that false_positive verdicts set (auditor.calibration). End-to-end versions: test_notify.py (webhook, exit code
on a real store), tests/cli/test_cli_review_loop.py and test_review_calibration.py (real text, real model)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from auditor.alerting import alert_decision, involved_point_keys
from auditor.calibration import alert_line, apply, undo
from auditor.findings import Finding, Rule, point_key
from auditor.ledger.repository import SILENCED_STATUSES
from auditor.types import Severity

MEDIUM_RULE = Rule("VA999", "test rule", Severity.MEDIUM)


def _finding(point: Any = 1, severity: Severity | None = None, **evidence: Any) -> Finding:
    return Finding(MEDIUM_RULE, "test", point, 0.5, "m", 0.4, dict(evidence), severity=severity)


def _decide(f: Finding, changed: set[Any] | frozenset[Any] = frozenset(), **kw: Any) -> tuple[bool, str]:
    args: dict[str, Any] = {"status": "open", "is_new": False, "mode": "changed", "baseline": False,
                            "changed_points": {point_key(p) for p in changed}, "silenced": SILENCED_STATUSES}
    args.update(kw)
    return alert_decision(f, **args)


def test_members_named_in_evidence_count_as_involved() -> None:
    f = _finding(1, members=[1, "7", 9], others=[3], sources=[{"id": 12, "tenant": "a"}], exact_copies=[[4, 5]])
    assert involved_point_keys(f) == {point_key(p) for p in (1, "7", 9, 3, 12, 4, 5)}
    assert involved_point_keys(_finding(None, score=[True])) == set()


@pytest.mark.parametrize(
    ("finding", "changed", "kw", "alerts", "why"),
    [
        (_finding(1), {1}, {}, True, "involves point(s) new or changed since the last scan: 1"),
        (_finding(1, members=[1, 8]), {8}, {}, True, "involves point(s) new or changed since the last scan: 8"),
        (_finding(1), {2}, {}, False, "no point new or changed since the last scan"),
        (_finding(1, Severity.HIGH), set(), {}, True, "high: always alerts"),
        (_finding(1, Severity.LOW), {1}, {}, False, "low: listed for review"),
        (_finding(1, Severity.LOW, calibration={}), {1}, {}, False, "low (below its review-calibrated line)"),
        (_finding(1, Severity.HIGH), {1}, {"status": "false_positive"}, False, "reviewed as false_positive"),
        (_finding(1, Severity.LOW), set(), {"baseline": True}, True, "baseline"),
        (_finding(1, Severity.LOW), set(), {"mode": "all"}, True, "alert-on all"),
        (_finding(1, Severity.LOW), set(), {"mode": "all", "status": "accepted"}, False, "reviewed as accepted"),
        (_finding(None), set(), {"is_new": True}, True, "new collection-level finding"),
        (_finding(None), set(), {}, False, "no point new or changed"),
        (_finding(1), set(), {"previous_severity": "low"}, True, "raised from low since the last scan"),
        (_finding(1), set(), {"previous_severity": "medium"}, False, "no point new or changed"),
    ],
)
def test_alert_decision(finding: Finding, changed: set[Any], kw: dict[str, Any], alerts: bool, why: str) -> None:
    got, reason = _decide(finding, changed, **kw)
    assert got is alerts and reason.startswith(why), reason


def test_alert_line_sits_at_the_highest_false_positive_and_strictly_below_any_confirmed_score() -> None:
    assert alert_line([0.5, 0.7, 0.6], []) == (0.7, False)
    assert alert_line([0.5, 0.7, 0.6], [0.9]) == (0.7, False)
    line, capped = alert_line([0.5, 0.7, 0.6], [0.65, 0.9])
    assert capped and line < 0.65 and line == math.nextafter(0.65, -math.inf)


def test_apply_keeps_findings_at_or_below_the_line_as_low_and_undo_restores_them() -> None:
    from auditor.calibration import RuleCalibration

    cal = {"VA999": RuleCalibration("VA999", "test", 5, 0, 0.5, None, 0.5, False)}
    at, above, high = _finding(1), _finding(2), _finding(3, Severity.HIGH)
    above.score, high.score = 0.51, 0.2
    assert apply([at, above, high], cal) == {"VA999": 2}
    assert at.effective_severity == Severity.LOW and at.evidence["calibration"]["severity_before"] == "medium"
    assert above.effective_severity == Severity.MEDIUM and "calibration" not in above.evidence
    assert high.effective_severity == Severity.LOW and high.evidence["calibration"]["severity_before"] == "high"
    assert apply([at], cal) == {}  # never twice
    undo(at)
    undo(high)
    assert at.severity is None and at.effective_severity == Severity.MEDIUM and "calibration" not in at.evidence
    assert high.effective_severity == Severity.HIGH
