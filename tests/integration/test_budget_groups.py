"""The alert budget keeps a poisoning group's weaker members reviewable (LOW) beside its member at the floor, on a
real store of real text embedded by the real model; findings no such group names still follow the budget."""

from __future__ import annotations

import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.types import FieldMap, Severity

pytestmark = pytest.mark.slow


def test_members_of_a_group_at_the_floor_stay_low(embed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clean = [r["text"] for name in ("wikipedia_en.jsonl", "hotpotqa_retrieved.jsonl") for r in load_jsonl(name)]
    poison = [r["text"] for r in load_jsonl("poisonedrag.jsonl")[:25]]  # 5 questions x 5 passages, no bait
    texts = clean + poison
    uri = build_qdrant_store(tmp_path / "s", embed(texts), [{"text": t} for t in texts])

    def scan(name: str, **params: object):  # type: ignore[no-untyped-def]
        return run_scan(uri, f"sqlite:///{tmp_path / name}", detectors=["poison-cluster"],
                        field_map=FieldMap(text="text"), params={"poison-cluster": params})

    loose = scan("loose.db", alert_budget=1.0, review_budget=1.0)
    scores = sorted((r.finding.score for r in loose.findings if r.finding.rule.id == "VA322"), reverse=True)
    assert len(scores) >= 10
    floor = (scores[2] + scores[3]) / 2  # a few at the floor, the rest under it with no budget at all
    tight = scan("tight.db", alert_budget=0.0, review_budget=0.0, alert_floors={"VA322": floor})
    claims = {str(r.finding.point_id): r.finding for r in tight.findings if r.finding.rule.id == "VA322"}
    strong = [f for f in claims.values() if f.score >= floor]
    named = {str(m) for f in strong for m in f.evidence["members"][1:]}
    vouched = [f for pid, f in claims.items() if pid in named and f.score < floor]
    assert strong and vouched
    for f in vouched:
        assert f.effective_severity is Severity.LOW
        assert f.evidence["alert_budget"]["vouched_by"] in {str(s.point_id) for s in strong}
    others = [f for pid, f in claims.items() if pid not in named and f.score < floor]
    assert all(f.effective_severity is Severity.INFO for f in others)  # no slots: the rest is INFO
    assert any("named by a group at the floor" in note for note in tight.notes)
