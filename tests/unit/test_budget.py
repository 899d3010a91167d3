"""The alert budget (auditor.budget): a ceiling per detector, a floor that an attack wave keeps, nothing dropped."""

from __future__ import annotations

import pytest

from auditor.budget import DetectorBudget, apply_budget, budgets_for, original_severity
from auditor.errors import DetectorError
from auditor.findings import Finding, Rule
from auditor.types import Severity
from detectors.hubs import HubDetector
from detectors.poisoning import PoisonClusterDetector

STAT = Rule("VA900", "a statistical rule", Severity.MEDIUM)
OTHER = Rule("VA901", "another scale", Severity.HIGH)
FACT = Rule("VA902", "a fact", Severity.HIGH)


def _findings(scores: list[float], rule: Rule = STAT, threshold: float = 1.0, start: int = 0) -> list[Finding]:
    return [Finding(rule, "d", start + i, s, "m", threshold) for i, s in enumerate(scores)]


def _severities(found: list[Finding]) -> list[str]:
    return [f.effective_severity.name for f in found]


def test_clean_collection_keeps_at_most_the_budget_and_moves_the_rest_down_ranked() -> None:
    found = _findings([1.1, 1.5, 1.2, 1.9, 1.3, 1.4])
    outcome = apply_budget(found, DetectorBudget("d", frozenset({"VA900"}), {"VA900": 5.0}, 0.001, 0.001), 2000)
    # 2 alert slots (0.1% of 2,000) to the strongest, 2 review slots as LOW, the rest INFO; nothing removed
    assert _severities(found) == ["INFO", "MEDIUM", "INFO", "MEDIUM", "LOW", "LOW"]
    assert (outcome.kept, outcome.within_budget, outcome.to_low, outcome.to_info) == (2, 2, 2, 2)
    moved = found[0].evidence["alert_budget"]
    assert moved["severity_before"] == "MEDIUM" and moved["kept_as"] == "INFO"
    assert "2 more within the budget (0.10% = 2 of 2,000 points" in outcome.describe(2000, 0.001)


def test_an_attack_wave_over_the_floor_is_never_calibrated_away() -> None:
    wave = _findings([9.0 + i / 100 for i in range(100)])  # 5% of 2,000 points, all over the floor
    noise = _findings([1.2, 1.3, 1.4], start=1000)
    apply_budget([*wave, *noise], DetectorBudget("d", frozenset({"VA900"}), {"VA900": 5.0}), 2000)
    assert all(f.effective_severity is Severity.MEDIUM for f in wave)
    assert _severities(noise) == ["LOW", "MEDIUM", "MEDIUM"]  # the budget's 2 slots go to the strongest noise


def test_rules_of_one_detector_share_the_budget_by_strength_towards_their_floor() -> None:
    a = _findings([1.5], STAT, threshold=1.0)  # half way to its floor 2.0
    b = _findings([90.0], OTHER, threshold=10.0, start=1)  # 80/90 of the way to its floor 100
    budget = DetectorBudget("d", frozenset({"VA900", "VA901"}), {"VA900": 2.0, "VA901": 100.0}, 0.001, 0.0)
    apply_budget([*a, *b], budget, 1000)
    assert b[0].effective_severity is Severity.HIGH and a[0].effective_severity is Severity.INFO


def test_facts_and_collection_findings_are_not_budgeted() -> None:
    fact = _findings([1.0] * 5, FACT)
    collection = Finding(STAT, "d", None, 3.0, "m", 1.0)
    apply_budget([*fact, collection], DetectorBudget("d", frozenset({"VA900"}), {}), 100)
    assert all(f.effective_severity is Severity.HIGH for f in fact)
    assert collection.effective_severity is Severity.MEDIUM


def test_a_carried_finding_is_ranked_again_from_its_original_severity() -> None:
    found = _findings([1.1, 1.2])
    budget = DetectorBudget("d", frozenset({"VA900"}), {}, 0.0, 0.0)
    apply_budget(found, budget, 1000)
    assert _severities(found) == ["INFO", "INFO"] and original_severity(found[0]) is Severity.MEDIUM
    apply_budget(found, DetectorBudget("d", frozenset({"VA900"}), {}, 0.002, 0.0), 1000)  # a larger budget later
    assert _severities(found) == ["MEDIUM", "MEDIUM"] and "alert_budget" not in found[0].evidence


def test_detectors_declare_their_budget_and_floors_are_validated() -> None:
    (hub,) = budgets_for([HubDetector(alert_budget=0.01, alert_floors={"VA333": 0.7})])
    assert hub.rules == {"VA331", "VA333"} and hub.alert_budget == 0.01 and hub.floors["VA333"] == 0.7
    assert HubDetector().config()["alert_budget"]["rules"] == ["VA331", "VA333"]
    with pytest.raises(DetectorError, match="VA321"):
        PoisonClusterDetector(alert_floors={"VA321x": 1.0})
    with pytest.raises(DetectorError, match="alert_floors"):
        PoisonClusterDetector(alert_floors={"VA321": "high"})


def test_members_of_a_group_at_the_floor_stay_reviewable() -> None:
    # a wave around one question: its strongest view reached the floor and names the weaker members of its group
    wave = _findings([9.0, 1.05, 1.02], start=0)
    wave[0].evidence = {"members": [0, 1, 2, 77]}
    noise = _findings([1.9, 1.8, 1.7, 1.6], start=10)
    other_rule = _findings([1.01], rule=OTHER, start=1)  # the same point under another rule: not vouched for
    budget = DetectorBudget("d", frozenset({"VA900", "VA901"}), {"VA900": 5.0, "VA901": 50.0}, 0.0005, 0.0005)
    outcome = apply_budget([*wave, *noise, *other_rule], budget, 2000)
    # 1 alert slot and 1 review slot go to the strongest noise; the wave's weaker members stay LOW outside them
    assert _severities(wave) == ["MEDIUM", "LOW", "LOW"]
    assert _severities(noise) == ["MEDIUM", "LOW", "INFO", "INFO"]
    assert _severities(other_rule) == ["INFO"]
    assert wave[1].evidence["alert_budget"]["vouched_by"] == "0"
    assert (outcome.vouched, outcome.low) == (2, 3)
    assert "2 of them named by a group at the floor" in outcome.describe(2000, 0.0005)


def test_a_point_the_detector_already_raises_uses_no_slot() -> None:
    # points 0 and 1 are already raised by a pattern rule the budget does not cover (HIGH and LOW); the
    # statistical findings on them must not take the slots from points nobody flagged yet
    facts = [Finding(FACT, "d", 0, 1.0, "m", None), Finding(FACT, "d", 1, 1.0, "m", None, severity=Severity.LOW)]
    stat = _findings([1.9, 1.5, 1.8, 1.7, 1.6])  # points 0..4
    budget = DetectorBudget("d", frozenset({"VA900"}), {"VA900": 5.0}, 0.001, 0.001)
    outcome = apply_budget([*facts, *stat], budget, 1000)  # one alert slot, one review slot
    # point 0 (already HIGH) keeps MEDIUM without a slot; point 1 (already LOW) drops to LOW without a slot;
    # the two slots go to points 2 and 3; point 4 falls to INFO
    assert _severities(stat) == ["MEDIUM", "LOW", "MEDIUM", "LOW", "INFO"]
    assert stat[1].evidence["alert_budget"]["point_raised_by"] == "VA902"
    assert outcome.already_raised == 2 and outcome.within_budget == 1
    assert "2 on points it already raises by another finding (no slot)" in outcome.describe(1000, 0.001)
    # another detector's finding on a point does not count: budgets are per detector
    other = [Finding(FACT, "e", 2, 1.0, "m", None)]
    again = _findings([1.9, 1.8], start=2)
    apply_budget([*other, *again], budget, 1000)
    assert _severities(again) == ["MEDIUM", "LOW"]
    # a raised point's statistical finding that is stronger than the others still competes for the alert slot:
    # alerting on a point that was only LOW is a new alert
    stat = _findings([1.9, 1.8, 1.7, 1.6, 1.5])
    apply_budget([*facts, *stat], budget, 1000)
    assert _severities(stat) == ["MEDIUM", "MEDIUM", "LOW", "INFO", "INFO"]
