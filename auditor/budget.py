"""The alert budget: how many of a collection's points one detector may raise at MEDIUM or above.

A statistical rule (a score against a threshold: outliers, hubs, near-duplicates, poison clusters, misfiled
points, the learned injection scorer, ...) was tuned on some corpora and will meet others whose clean bulk scores
higher. So that no corpus can make a detector flood its users, every such rule's findings pass this step after the
detectors ran, per detector and collection of ``n`` points:

* a finding whose score reaches its rule's **floor** (``Detector.alert_floors``, chosen leave-one-corpus-out on
  the development corpora, see benchmarks/results/generalization.md) keeps its severity however many there are:
  a real attack wave (5% of the store poisoned) is never calibrated away;
* of the others, the strongest ``floor(alert_budget * n)`` keep their severity (the *alert line*);
* the next ``floor(review_budget * n)`` are kept as LOW — ranked, reviewable, not alerting;
* the rest are kept as INFO.

Nothing is dropped: a finding moved down keeps its score and says why in ``evidence["alert_budget"]`` (with the
severity it had, so an incremental scan that carries it over ranks it again from the same start). Findings of
one detector are ranked together by how far each got from its own threshold towards its rule's floor, so rules
with different score scales share one budget. Rules that are facts, not statistics (a NaN vector, a secret,
a tenant label that is not a string), are not budgeted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor.findings import Finding
from auditor.types import Severity

#: The share of a collection's points one detector may raise at MEDIUM or above below its rules' floors.
DEFAULT_ALERT_BUDGET = 0.001
#: The further share kept as LOW (reviewable); below it, INFO.
DEFAULT_REVIEW_BUDGET = 0.001
EVIDENCE_KEY = "alert_budget"


@dataclass(frozen=True)
class DetectorBudget:
    """One detector's budget: the rules it covers, their floors and the two shares."""

    detector: str
    rules: frozenset[str]
    floors: Mapping[str, float]
    alert_budget: float = DEFAULT_ALERT_BUDGET
    review_budget: float = DEFAULT_REVIEW_BUDGET


@dataclass
class BudgetOutcome:
    """What the budget did to one detector's findings in one scan (for the scan notes and the benchmark)."""

    detector: str
    candidates: int = 0
    over_floor: int = 0
    alert_slots: int = 0
    review_slots: int = 0
    #: findings under the floors that kept alerting within ``alert_slots``
    within_budget: int = 0
    #: findings LOW after the budget (already LOW, or moved there) within ``review_slots``
    low: int = 0
    #: of ``low``, those moved down from MEDIUM or above
    to_low: int = 0
    to_info: int = 0
    alert_line: float | None = None
    floors: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """Findings that keep alerting: at or above their floor, or within the budget."""
        return self.over_floor + self.within_budget

    def describe(self, n_points: int, alert_budget: float) -> str:
        floors = ", ".join(f"{r} {v:g}" for r, v in sorted(self.floors.items())) or "none"
        line = f", alert line at strength {self.alert_line:.3g}" if self.alert_line is not None else ""
        return (
            f"alert budget: {self.detector}: {self.candidates} finding(s); {self.over_floor} at or above the floor "
            f"({floors}); {self.within_budget} more within the budget ({alert_budget:.2%} = {self.alert_slots} of "
            f"{n_points:,} points{line}); {self.low} LOW ({self.to_low} moved down); {self.to_info} moved to INFO"
        )


def original_severity(f: Finding) -> Severity:
    """The severity a finding had before any budget moved it (a carried finding may have been moved already)."""
    before = (f.evidence or {}).get(EVIDENCE_KEY, {}).get("severity_before")
    return Severity[before] if isinstance(before, str) and before in Severity.__members__ else f.effective_severity


def strength(f: Finding, floor: float | None) -> float:
    """How far a finding got from its threshold towards its rule's floor: 0 at the threshold, 1 at the floor.

    Without a threshold or a floor above it, the raw score ranks it (all of one rule then share one scale)."""
    if floor is None or f.threshold is None or not math.isfinite(f.threshold) or floor <= f.threshold:
        return float(f.score)
    return (float(f.score) - float(f.threshold)) / (floor - float(f.threshold))


def apply_budget(findings: Iterable[Finding], budget: DetectorBudget, n_points: int) -> BudgetOutcome:
    """Move the findings of ``budget``'s rules that exceed the budget down to LOW or INFO, in place."""
    mine = [
        f for f in findings
        if f.detector == budget.detector and f.rule.id in budget.rules and f.point_id is not None
        and original_severity(f).rank >= Severity.LOW.rank
    ]
    outcome = BudgetOutcome(budget.detector, candidates=len(mine), floors={
        r: v for r, v in budget.floors.items() if r in budget.rules
    })
    outcome.alert_slots = math.floor(max(0.0, budget.alert_budget) * n_points + 1e-9)
    outcome.review_slots = math.ceil(max(0.0, budget.review_budget) * n_points - 1e-9)
    for f in mine:  # a carried finding starts again from the severity it had before any budget
        before = original_severity(f)
        if f.effective_severity != before:
            f.severity = before
        (f.evidence or {}).pop(EVIDENCE_KEY, None)

    def over_floor(f: Finding) -> bool:
        floor = budget.floors.get(f.rule.id)
        return floor is not None and f.score >= floor

    strong = [f for f in mine if over_floor(f)]
    outcome.over_floor = len(strong)
    rest = sorted((f for f in mine if not over_floor(f)),
                  key=lambda f: (-strength(f, budget.floors.get(f.rule.id)), str(f.point_id)))
    alerting = [f for f in rest if f.effective_severity.rank >= Severity.MEDIUM.rank]
    kept_alerts = alerting[: outcome.alert_slots]
    if kept_alerts:
        outcome.alert_line = strength(kept_alerts[-1], budget.floors.get(kept_alerts[-1].rule.id))
    kept_ids = {id(f) for f in kept_alerts}
    outcome.within_budget = len(kept_alerts)
    review_left = outcome.review_slots
    for f in rest:
        if id(f) in kept_ids:
            continue
        before = f.effective_severity
        target = Severity.LOW if review_left > 0 else Severity.INFO
        if target == Severity.LOW:
            review_left -= 1
        if before.rank <= target.rank:  # already LOW (or INFO) within the review budget: unchanged
            outcome.low += before == Severity.LOW
            continue
        f.severity = target
        f.evidence = {**(f.evidence or {}), EVIDENCE_KEY: {
            "severity_before": before.name, "kept_as": target.name,
            "strength": round(strength(f, budget.floors.get(f.rule.id)), 6),
            "alert_slots": outcome.alert_slots, "review_slots": outcome.review_slots,
        }}
        if target == Severity.LOW:
            outcome.to_low += 1
            outcome.low += 1
        else:
            outcome.to_info += 1
    return outcome


def budgets_for(detectors: Sequence[Any]) -> list[DetectorBudget]:
    """The budget of each detector that declares budgeted rules (``Detector.budgeted_rules``)."""
    out = []
    for det in detectors:
        rules = frozenset(getattr(det, "budgeted_rules", ()) or ())
        if not rules:
            continue
        params = getattr(det, "params", {})
        out.append(DetectorBudget(
            det.name, rules, det.floors(),
            alert_budget=float(params.get("alert_budget", DEFAULT_ALERT_BUDGET)),
            review_budget=float(params.get("review_budget", DEFAULT_REVIEW_BUDGET)),
        ))
    return out
