"""The typo-burst detector (VA352, default set) through the real scan engine and ledger, on real Wikipedia summaries
embedded with the real model, with typo documents made by the red team's GARAG-style attack against that model."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import build_qdrant_store, load_jsonl

from auditor.budget import budgets_for
from auditor.context import ScanSettings
from auditor.engine import Scanner, ScanOptions, ScanResult
from auditor.errors import DetectorError
from auditor.ledger import Ledger
from auditor.redteam.adversarial import typo_attack
from auditor.redteam.generators import question_bait
from auditor.registry import connector_for
from auditor.types import FieldMap, Severity
from detectors.naturalness import NaturalnessDetector
from detectors.typo_bursts import TypoBurstDetector

N_CLEAN = 400


def scan(uri: str, ledger_url: str, *detectors: Any) -> ScanResult:
    """One scan of ``uri`` with exactly these detector instances (the real engine, ledger and connector)."""
    ledger = Ledger(ledger_url).open()
    connector = connector_for(uri, collection="docs")
    try:
        options = ScanOptions(field_map=FieldMap(text="text"), settings=ScanSettings(), show_progress=False)
        return Scanner(ledger, connector, list(detectors), options).run()
    finally:
        connector.close()
        ledger.dispose()


@pytest.fixture(scope="module")
def corpus(embed: Any) -> dict[str, Any]:
    """400 clean summaries and 20 further ones, each edited by the red team's typo attack against the real model
    toward its own question bait (at most 6 edits, 5% of the words), all embedded with the real model."""
    rows = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")]
    clean = rows[:N_CLEAN]
    hosts = [t for t in rows[N_CLEAN:] if len(t.split()) >= 100][:20]
    rng = random.Random(19)
    typos = [typo_attack(t, embed([question_bait(t)])[0], embed, rng=rng, most=6, candidates=8)[0] for t in hosts]
    texts = clean + typos
    return {"texts": texts, "vectors": embed(texts), "typos": typos, "hosts": hosts}


def test_typo_bursts_are_found_and_no_clean_summary_is(tmp_path: Path, corpus: dict[str, Any],
                                                        sqlite_ledger_url: str) -> None:
    texts, typos = corpus["texts"], corpus["typos"]
    # the attack stops where no edit moves the text closer to its query: an unedited host is a clean document
    planted = {N_CLEAN + i for i, (t, h) in enumerate(zip(typos, corpus["hosts"], strict=True)) if t != h}
    assert len(planted) >= 16
    uri = build_qdrant_store(tmp_path / "s", corpus["vectors"], [{"text": t} for t in texts])
    result = scan(uri, sqlite_ledger_url, TypoBurstDetector())
    found = {int(r.finding.point_id): r.finding for r in result.findings if r.finding.rule_id == "VA352"}
    assert set(found) <= planted, sorted(set(found) - planted)  # no clean summary reaches the line
    # of >= 16 typo documents (19 here), 11 reach the line (some edits make a real word or misspell a rare one, and
    # two edits in a long text are no burst); the attack's choice of edits follows float rounding of the model, so
    # the floor leaves room. As shipped a burst is LOW: reviewable, not alerting (docs/detectors-content.md)
    assert len(found) >= 8, sorted(f.score for f in found.values())
    assert {f.effective_severity for f in found.values()} == {Severity.LOW}
    f = found[min(found)]
    assert f.message.startswith("typo burst:") and f.threshold == pytest.approx(1.0) and f.score >= 1.0
    assert len(f.evidence["near_misses"]) >= 2 and f.evidence["typo_surprise"] >= 3.51
    assert f.evidence["words"] >= 100 and 0 < f.evidence["collection_rate"] < 0.01
    assert any(n.startswith("typo-burst: 420 documents") for n in result.notes)
    # ``alert = true``: the same bursts at MEDIUM
    alerting = scan(uri, sqlite_ledger_url, TypoBurstDetector(alert=True))
    medium = {int(r.finding.point_id) for r in alerting.findings if r.finding.rule_id == "VA352"
              and r.finding.effective_severity == Severity.MEDIUM}
    assert medium == set(found)
    # the typo component of naturalness reads the same bursts (one code, detectors/typos.py)
    both = scan(uri, sqlite_ledger_url, TypoBurstDetector(), NaturalnessDetector())
    va351 = {int(r.finding.point_id): r.finding for r in both.findings if r.finding.rule_id == "VA351"}
    assert set(found) <= set(va351)
    for p in found:
        assert va351[p].evidence["typo_surprise"] == found[p].evidence["typo_surprise"]
        assert va351[p].evidence["near_misses"] == found[p].evidence["near_misses"]


def test_a_wave_of_bursts_is_kept_under_the_budget(tmp_path: Path, corpus: dict[str, Any],
                                                   sqlite_ledger_url: str) -> None:
    """Bursts are 5% of the store: the budget's review slots (0.1% of the points) are far fewer, but findings at the
    rule's floor keep their severity however many there are; under the floor they share the review budget."""
    (budget,) = budgets_for([TypoBurstDetector()])
    assert TypoBurstDetector.enabled_by_default and budget.detector == "typo-burst"
    assert budget.rules == {"VA352"} and budget.floors == {"VA352": 1.0}
    uri = build_qdrant_store(tmp_path / "w", corpus["vectors"], [{"text": t} for t in corpus["texts"]])
    result = scan(uri, sqlite_ledger_url, TypoBurstDetector(alert=True))
    medium = [r.finding for r in result.findings if r.finding.effective_severity == Severity.MEDIUM]
    assert len(medium) >= 8 > 0.001 * len(corpus["texts"])
    assert any("alert budget: typo-burst" in n for n in result.notes)
    # a floor over every burst: the detector reports them LOW and the budget keeps the strongest in its one review
    # slot (ceil(0.1% of 420)) and moves the rest to INFO, with the reason — never dropped
    high_floor = scan(uri, sqlite_ledger_url, TypoBurstDetector(alert=True, alert_floors={"VA352": 1e9}))
    kept = [r.finding for r in high_floor.findings if r.finding.rule_id == "VA352"]
    assert {f.point_id for f in kept} == {f.point_id for f in medium}
    assert [f.effective_severity for f in kept].count(Severity.LOW) == 1 and Severity.MEDIUM not in {
        f.effective_severity for f in kept}
    info = [f for f in kept if f.effective_severity == Severity.INFO]
    assert info and all(f.evidence["alert_budget"]["kept_as"] == "INFO" for f in info)
    # a report line under the floor: the weaker bursts compete for the one review slot, the rest are INFO
    review = scan(uri, sqlite_ledger_url, TypoBurstDetector(report_strength=0.7))
    weak = [r.finding for r in review.findings if r.finding.rule_id == "VA352" and r.finding.score < 1.0]
    assert weak and sum(f.effective_severity == Severity.LOW for f in weak) <= 1
    assert len([r for r in review.findings if r.finding.rule_id == "VA352"
                and r.finding.effective_severity == Severity.LOW and r.finding.score >= 1.0]) == len(medium)


def test_a_small_collection_is_not_judged_and_bad_parameters_are_refused(tmp_path: Path, corpus: dict[str, Any],
                                                                         sqlite_ledger_url: str) -> None:
    texts = [*corpus["texts"][:30], *corpus["typos"][:3]]
    vectors = np.asarray(corpus["vectors"][: len(texts)])
    uri = build_qdrant_store(tmp_path / "small", vectors, [{"text": t} for t in texts])
    result = scan(uri, sqlite_ledger_url, TypoBurstDetector())
    assert not [r for r in result.findings if r.finding.rule_id == "VA352"]
    assert any("typo-burst: 33 documents with text, fewer than min_documents" in n for n in result.notes)
    for bad, word in (({"typo_min_coverage": 1.5}, "typo_min_coverage"), ({"typo_line": 0.0}, "typo_line"),
                      ({"typo_min_misses": 0}, "typo_min_misses"), ({"report_strength": -1.0}, "report_strength"),
                      ({"min_documents": 0}, "min_documents")):
        with pytest.raises(DetectorError, match=word):
            scan(uri, sqlite_ledger_url, TypoBurstDetector(**bad))
    with pytest.raises(DetectorError, match="unknown parameter 'line'"):
        TypoBurstDetector(line=3.0)
