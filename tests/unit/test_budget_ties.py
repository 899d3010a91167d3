"""The alert budget never splits a tie: findings of equal strength share one severity, a tie group straddling a line
goes below it whole, every weaker group follows, and the budget is still kept."""

from __future__ import annotations

import itertools

from auditor.budget import TIE_TOLERANCE, DetectorBudget, apply_budget, tie_groups, tie_tolerance
from auditor.findings import Finding, Rule
from auditor.types import Severity

STAT = Rule("VA900", "a statistical rule", Severity.MEDIUM)
HUBLIKE = Rule("VA901", "a LOW statistical rule", Severity.LOW)
BUDGET = DetectorBudget("d", frozenset({"VA900", "VA901"}), {"VA900": 100.0, "VA901": 100.0}, 0.001, 0.001)


def _findings(scores: list[float], rule: Rule = STAT, ids: list[int] | None = None) -> list[Finding]:
    return [Finding(rule, "d", i, s, "m", 1.0) for i, s in zip(ids or range(len(scores)), scores, strict=True)]


def _by_id(found: list[Finding]) -> dict[object, str]:
    return {f.point_id: f.effective_severity.name for f in found}


def test_a_tie_group_straddling_the_alert_line_goes_below_it_whole() -> None:
    # 3 alert slots, 3 review slots (0.1% of 3,000): 9 alone, then a tie of three at 8 that would take slots 2-4
    found = _findings([9.0, 8.0, 8.0, 8.0, 7.0, 6.0])
    outcome = apply_budget(found, BUDGET, 3000)
    assert _by_id(found) == {0: "MEDIUM", 1: "LOW", 2: "LOW", 3: "LOW", 4: "INFO", 5: "INFO"}
    assert (outcome.within_budget, outcome.low, outcome.tied_at_alert_line) == (1, 3, 3)
    assert "3 tied at the alert line kept below it" in outcome.describe(3000, 0.001)


def test_a_tie_group_straddling_the_review_line_goes_to_info_and_weaker_groups_follow() -> None:
    # LOW rule (nothing alerts): 3 review slots; a tie of three at 5 after two at 6 and 5.5 does not fit
    found = _findings([6.0, 5.5, 5.0, 5.0, 5.0, 4.0], HUBLIKE)
    outcome = apply_budget(found, BUDGET, 3000)
    # the single weaker finding (4.0) would fit the one slot left but must not rank above the tie it trails
    assert _by_id(found) == {0: "LOW", 1: "LOW", 2: "INFO", 3: "INFO", 4: "INFO", 5: "INFO"}
    assert (outcome.low, outcome.to_info, outcome.tied_at_review_line) == (2, 4, 3)


def test_severity_never_depends_on_point_ids_and_never_rises_as_strength_falls() -> None:
    scores = [9.0, 8.0, 8.0, 7.5, 7.0, 7.0, 7.0, 6.0, 6.0, 5.0, 4.0, 4.0]
    seen = set()
    for ids in itertools.islice(itertools.permutations(range(len(scores))), 0, 5000, 97):
        found = _findings(scores, ids=list(ids))
        apply_budget(found, DetectorBudget("d", frozenset({"VA900"}), {"VA900": 100.0}, 0.002, 0.002), 2000)
        by_score = sorted(((f.score, f.effective_severity.rank) for f in found), reverse=True)
        assert all(a[1] >= b[1] for a, b in itertools.pairwise(by_score))  # monotone in strength
        assert len({(s, r) for s, r in by_score}) == len(set(scores))  # one severity per score
        alerting = sum(r >= Severity.MEDIUM.rank for _, r in by_score)
        low = sum(r == Severity.LOW.rank for _, r in by_score)
        assert alerting <= 4 and low <= 4  # the budget is kept
        seen.add(tuple(r for _, r in by_score))
    assert len(seen) == 1


def test_near_equal_strengths_within_float_noise_are_one_tie() -> None:
    nudge = 0.3 * TIE_TOLERANCE
    tol = TIE_TOLERANCE * 8.0
    assert tie_groups([(8.0, tol), (8.0 - 8 * nudge, tol), (8.0 - 16 * nudge, tol), (7.9, tol)]) == [[0, 1, 2], [3]]
    assert tie_groups([(0.5, TIE_TOLERANCE), (0.5 - nudge, TIE_TOLERANCE), (0.4, TIE_TOLERANCE)]) == [[0, 1], [2]]
    found = _findings([9.0, 8.0, 8.0 * (1 - nudge), 8.0 * (1 - 2 * nudge), 7.0])  # one group of three at ~8
    apply_budget(found, BUDGET, 3000)  # 3 alert slots: the group of three does not fit after the 9
    assert _by_id(found) == {0: "MEDIUM", 1: "LOW", 2: "LOW", 3: "LOW", 4: "INFO"}


def test_a_far_floor_does_not_make_everything_a_tie() -> None:
    # floors out of reach squeeze strengths towards 0; the tolerance is the score's, scaled the same way
    found = _findings([3.0, 2.0, 2.0, 1.5])
    apply_budget(found, DetectorBudget("d", frozenset({"VA900"}), {"VA900": 1e9}, 0.001, 0.001), 1000)
    assert _by_id(found) == {0: "MEDIUM", 1: "INFO", 2: "INFO", 3: "INFO"}
    assert tie_tolerance(found[0], 1e9) < 1e-14 < tie_tolerance(found[0], None)


def test_ties_across_rules_of_one_detector_are_ranked_by_strength() -> None:
    a = [Finding(STAT, "d", 0, 1.5, "m", 1.0), Finding(STAT, "d", 1, 1.5, "m", 1.0)]  # strength 0.5
    b = [Finding(HUBLIKE, "d", 2, 6.0, "m", 2.0)]  # (6 - 2) / (10 - 2) = 0.5: the same strength
    budget = DetectorBudget("d", frozenset({"VA900", "VA901"}), {"VA900": 2.0, "VA901": 10.0}, 0.001, 0.002)
    apply_budget([*a, *b], budget, 2000)  # 2 alert slots fit both alerting members of the tie, 4 review slots
    assert [f.effective_severity for f in (*a, *b)] == [Severity.MEDIUM, Severity.MEDIUM, Severity.LOW]
