"""The alert budget on a real store of real text embedded by the real model (issue 17 item 2): a wave of poison
(5% of the store) keeps alerting, each detector's findings under its floors stay within the budget, nothing is
dropped, and the scan notes say per detector what the budget did."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.budget import DEFAULT_ALERT_BUDGET, budgets_for
from auditor.registry import detector_classes
from auditor.types import FieldMap, Severity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(embed, tmp_path_factory):  # type: ignore[no-untyped-def]
    clean = [r["text"] for name in ("wikipedia_en.jsonl", "pubmed.jsonl", "hotpotqa_retrieved.jsonl",
                                    "wikipedia_es.jsonl") for r in load_jsonl(name)]
    poison = load_jsonl("poisonedrag.jsonl")[:50]  # 10 target questions x 5 passages, each behind its question
    texts = clean + [f"{r['question']}. {r['text']}" for r in poison]
    uri = build_qdrant_store(tmp_path_factory.mktemp("budget") / "s", embed(texts),
                             [{"text": t} for t in texts])
    return uri, len(clean), len(texts)


def _scan(uri: str, ledger: str, **params: dict) -> object:  # type: ignore[type-arg]
    names = [n for n, c in detector_classes().items() if c.enabled_by_default]
    return run_scan(uri, ledger, detectors=names, field_map=FieldMap(text="text"), params=params)


@pytest.fixture(scope="module")
def default_scan(store, tmp_path_factory):  # type: ignore[no-untyped-def]
    return _scan(store[0], f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'default.db'}")


def test_a_poison_wave_keeps_alerting_and_the_rest_stays_within_budget(store, default_scan) -> None:  # type: ignore[no-untyped-def]
    _, n_clean, n = store
    assert (n - n_clean) / n >= 0.05
    result = default_scan
    assert result.status == "completed"
    alerting = {r.finding.point_id for r in result.findings
                if r.finding.effective_severity.rank >= Severity.MEDIUM.rank}
    assert set(range(n_clean, n)) <= alerting  # every planted passage still at MEDIUM or above

    classes = detector_classes()
    slots = int(DEFAULT_ALERT_BUDGET * n)
    for budget in budgets_for([cls() for cls in classes.values() if cls.budgeted_rules]):
        under_floor = [
            r.finding for r in result.findings
            if r.finding.detector == budget.detector and r.finding.rule.id in budget.rules
            and r.finding.point_id is not None and r.finding.effective_severity.rank >= Severity.MEDIUM.rank
            and not r.finding.score >= budget.floors.get(r.finding.rule.id, float("inf"))
        ]
        assert len(under_floor) <= slots, budget.detector
    budget_notes = [note for note in result.notes if note.startswith("alert budget: ")]
    assert budget_notes and any("poison-cluster" in note for note in budget_notes)


def test_the_budget_moves_findings_down_and_drops_none(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri, _, _ = store
    budgeted = {name: cls for name, cls in detector_classes().items() if cls.budgeted_rules and cls.enabled_by_default}
    unlimited = {name: {"alert_budget": 1.0, "review_budget": 1.0} for name in budgeted}
    loose = _scan(uri, f"sqlite:///{tmp_path / 'loose.db'}", **unlimited)
    # floors out of reach: every statistical finding competes for the 0.1% budget (the shipped floors leave this
    # store's clean part with too few findings under them to show the budget at work)
    unreachable = {name: {"alert_floors": {rule: 1e9 for rule in cls.budgeted_rules}} for name, cls in budgeted.items()}
    default = _scan(uri, f"sqlite:///{tmp_path / 'tight.db'}", **unreachable)
    key = lambda r: (r.finding.rule.id, str(r.finding.point_id), r.finding.identity)  # noqa: E731
    assert {key(r) for r in loose.findings} == {key(r) for r in default.findings}
    moved = [r.finding for r in default.findings if "alert_budget" in r.finding.evidence]
    assert moved  # the poison wave alone is 5% of the store: far more than a 0.1% budget
    loose_scores = {key(r): r.finding.score for r in loose.findings}
    for r in default.findings:
        f = r.finding
        if "alert_budget" in f.evidence:  # each says what it was, and is now LOW or INFO with its score kept
            assert f.evidence["alert_budget"]["severity_before"] in ("MEDIUM", "HIGH", "CRITICAL", "LOW")
            assert f.effective_severity in (Severity.LOW, Severity.INFO) and f.score == loose_scores[key(r)]
