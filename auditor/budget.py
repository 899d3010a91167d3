"""The alert budget: how many of a collection's points one detector may raise at MEDIUM or above.

A statistical rule (a score against a threshold: outliers, hubs, near-duplicates, poison clusters, misfiled
points, the learned injection scorer, ...) was tuned on some corpora and will meet others whose clean bulk scores
higher. So that no corpus can make a detector flood its users, every such rule's findings pass this step after the
detectors ran, per detector and collection of ``n`` points:

* a finding whose score reaches its rule's **floor** (``Detector.alert_floors``, chosen leave-one-corpus-out on
  the development corpora, see benchmarks/results/generalization.md) keeps its severity however many there are:
  a real attack wave (5% of the store poisoned) is never calibrated away;
* of the others, the strongest ``floor(alert_budget * n)`` keep their severity (the *alert line*);
* the next ``ceil(review_budget * n)`` are kept as LOW — ranked, reviewable, not alerting;
* the rest are kept as INFO — except a finding **vouched for** by a finding of the same rule at or above its
  floor: one whose group (``evidence["members"]``, the point first) names this point. A group that reached the
  floor is one incident (one poisoning wave around one question); its weaker members stay LOW, reviewable with
  it, however many LOW slots the budget has left (they do not use them).

The budget counts points: a finding on a point the same detector already raises at least as high by a finding the
budget does not move (a pattern rule, a finding at its floor) takes no slot — it keeps its severity, or, raised
higher than the point already is, competes for the alert slots and otherwise stays LOW outside the review slots.

Nothing is dropped: a finding moved down keeps its score and says why in ``evidence["alert_budget"]`` (with the
severity it had, so an incremental scan that carries it over ranks it again from the same start). Findings of
one detector are ranked together by how far each got from its own threshold towards its rule's floor, so rules
with different score scales share one budget. Rules that are facts, not statistics (a NaN vector, a secret,
a tenant label that is not a string), are not budgeted.

**Ties are never split.** Findings of equal strength (scores within :data:`TIE_TOLERANCE` of each other, relative,
so that the last bits of float32 arithmetic — one graph's similarity against another's for the same pair — do not
rank) form one tie group,
and a line falls only between groups: a group that would cross the alert line goes entirely below it (to the review
stream), a group that would cross the review line goes entirely to INFO, and every weaker group follows it there,
so severity never rises as strength falls and the budget is still kept (never more than ``alert_slots`` alerting
nor ``review_slots`` LOW), members of a group at the floor aside. Which of several equal findings a budget keeps
therefore never depends on point ids or on the order a graph listed them in — integer scores such as the hub
detector's k-occurrence tie by the hundred, and an approximate graph reorders such ties freely.
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
#: Scores closer than this (relative to the score, at least absolute) tie: float32 similarities of the same pair
#: from two search paths differ in the 7th digit, a robust z of them in the 6th at most.
TIE_TOLERANCE = 1e-6


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
    #: findings of a tie group that straddled the alert (review) line, moved below it whole
    tied_at_alert_line: int = 0
    tied_at_review_line: int = 0
    #: of ``low``, findings kept LOW because a group at or above the floor names them (not in ``review_slots``)
    vouched: int = 0
    #: findings on points the detector already raises as high (or at LOW) by a finding the budget does not move:
    #: they use no slot (the budget counts points, and the point is counted)
    already_raised: int = 0
    floors: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """Findings that keep alerting: at or above their floor, or within the budget."""
        return self.over_floor + self.within_budget

    def describe(self, n_points: int, alert_budget: float) -> str:
        floors = ", ".join(f"{r} {v:g}" for r, v in sorted(self.floors.items())) or "none"
        line = f", alert line at strength {self.alert_line:.3g}" if self.alert_line is not None else ""
        ties = [f"{count} tied at the {name} line kept below it" for count, name in
                ((self.tied_at_alert_line, "alert"), (self.tied_at_review_line, "review")) if count]
        vouched = f", {self.vouched} of them named by a group at the floor" if self.vouched else ""
        raised = (f"; {self.already_raised} on points it already raises by another finding (no slot)"
                  if self.already_raised else "")
        return (
            f"alert budget: {self.detector}: {self.candidates} finding(s); {self.over_floor} at or above the floor "
            f"({floors}); {self.within_budget} more within the budget ({alert_budget:.2%} = {self.alert_slots} of "
            f"{n_points:,} points{line}); {self.low} LOW ({self.to_low} moved down{vouched}); {self.to_info} moved "
            "to INFO" + (f" ({'; '.join(ties)})" if ties else "") + raised
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


def tie_tolerance(f: Finding, floor: float | None) -> float:
    """:data:`TIE_TOLERANCE` of the finding's score, in units of :func:`strength`."""
    tol = TIE_TOLERANCE * max(1.0, abs(float(f.score)))
    if floor is None or f.threshold is None or not math.isfinite(f.threshold) or floor <= f.threshold:
        return tol
    return tol / (floor - float(f.threshold))


def apply_budget(findings: Iterable[Finding], budget: DetectorBudget, n_points: int) -> BudgetOutcome:
    """Move the findings of ``budget``'s rules that exceed the budget down to LOW or INFO, in place."""
    findings = list(findings)
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
    vouchers = vouched_for(strong)
    raised = raised_points(findings, budget, strong)

    def raised_by(f: Finding) -> tuple[int, str] | None:
        return raised.get(str(f.point_id))

    rest = [f for f in mine if not over_floor(f)]
    # a point this detector already raises as high by a finding the budget does not move adds no point
    exempt = [f for f in rest if (r := raised_by(f)) is not None and r[0] >= f.effective_severity.rank]
    outcome.already_raised = len(exempt)
    rest = [f for f in rest if not ((r := raised_by(f)) is not None and r[0] >= f.effective_severity.rank)]
    strengths = {id(f): strength(f, budget.floors.get(f.rule.id)) for f in rest}
    rest.sort(key=lambda f: (-strengths[id(f)], str(f.point_id)))  # ids order ties for display, never for severity
    groups = tie_groups([(strengths[id(f)], tie_tolerance(f, budget.floors.get(f.rule.id))) for f in rest])

    kept_ids: set[int] = set()
    for group in groups:  # whole tie groups of alerting findings, strongest first, while they fit
        alerting = [f for f in (rest[i] for i in group) if f.effective_severity.rank >= Severity.MEDIUM.rank]
        if len(kept_ids) + len(alerting) > outcome.alert_slots:
            outcome.tied_at_alert_line = len(alerting) if len(kept_ids) < outcome.alert_slots else 0
            break
        kept_ids.update(id(f) for f in alerting)
        if alerting:
            outcome.alert_line = strengths[id(alerting[-1])]
    outcome.within_budget = len(kept_ids)

    review_left = outcome.review_slots
    reviewing = True
    for group in groups:
        members = [f for f in (rest[i] for i in group) if id(f) not in kept_ids]
        for f in members[:]:
            # a member of a group at the floor, or a point the detector already raises at LOW or above:
            # LOW, outside the review slots
            voucher = vouchers.get((f.rule.id, str(f.point_id)))
            prior = raised_by(f)
            if voucher is not None:
                reason = {"vouched_by": voucher}
                outcome.vouched += 1
            elif prior is not None and prior[0] >= Severity.LOW.rank:
                reason = {"point_raised_by": prior[1]}
                outcome.already_raised += 1
            else:
                continue
            members.remove(f)
            outcome.low += 1
            if f.effective_severity.rank > Severity.LOW.rank:
                f.evidence = {**(f.evidence or {}), EVIDENCE_KEY: {
                    "severity_before": f.effective_severity.name, "kept_as": Severity.LOW.name,
                    "strength": round(strengths[id(f)], 6), **reason,
                    "alert_slots": outcome.alert_slots, "review_slots": outcome.review_slots,
                }}
                f.severity = Severity.LOW
                outcome.to_low += 1
        if reviewing and len(members) > review_left:
            reviewing = False  # this group and every weaker one: INFO
            outcome.tied_at_review_line = len(members) if review_left else 0
        if reviewing:
            review_left -= len(members)
        target = Severity.LOW if reviewing else Severity.INFO
        for f in members:
            before = f.effective_severity
            if before.rank <= target.rank:  # already LOW (or INFO) within the review budget: unchanged
                outcome.low += before == Severity.LOW
                continue
            f.severity = target
            f.evidence = {**(f.evidence or {}), EVIDENCE_KEY: {
                "severity_before": before.name, "kept_as": target.name,
                "strength": round(strengths[id(f)], 6),
                "alert_slots": outcome.alert_slots, "review_slots": outcome.review_slots,
            }}
            if target == Severity.LOW:
                outcome.to_low += 1
                outcome.low += 1
            else:
                outcome.to_info += 1
    return outcome


def raised_points(
    findings: Sequence[Finding], budget: DetectorBudget, strong: Sequence[Finding],
) -> dict[str, tuple[int, str]]:
    """Point id -> (severity rank, rule id) of the highest finding of ``budget``'s detector on that point that the
    budget does not move: one of a rule it does not cover (a pattern, a fact), or one at or above its floor."""
    out: dict[str, tuple[int, str]] = {}
    held = [(f, f.effective_severity) for f in findings
            if f.detector == budget.detector and f.rule.id not in budget.rules and f.point_id is not None]
    held += [(f, original_severity(f)) for f in strong]
    for f, severity in held:
        key = str(f.point_id)
        if severity.rank >= Severity.LOW.rank and severity.rank > out.get(key, (-1, ""))[0]:
            out[key] = (severity.rank, f.rule.id)
    return out


def vouched_for(strong: Sequence[Finding]) -> dict[tuple[str, str], str]:
    """``(rule id, point id)`` of every point that a finding at or above its floor names as a member of its group
    (``evidence["members"]`` after the point itself), mapped to the id of the first such finding's point."""
    out: dict[tuple[str, str], str] = {}
    for f in sorted(strong, key=lambda f: (-float(f.score), str(f.point_id))):
        for member in ((f.evidence or {}).get("members") or [])[1:]:
            out.setdefault((f.rule.id, str(member)), str(f.point_id))
    return out


def tie_groups(ranked: Sequence[tuple[float, float]]) -> list[list[int]]:
    """Positions of ``ranked`` ((strength, tolerance) pairs, strongest first) in tie groups: a new group starts
    where the next strength is further below the previous than either's tolerance (:func:`tie_tolerance`)."""
    groups: list[list[int]] = []
    previous, previous_tol = math.inf, 0.0
    for i, (value, tol) in enumerate(ranked):
        if not groups or previous - value > max(tol, previous_tol):
            groups.append([])
        groups[-1].append(i)
        previous, previous_tol = value, tol
    return groups


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
