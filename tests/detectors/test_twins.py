"""Conflicting-twins detector on a real Qdrant store: Wikipedia passages and minimal-edit counterfactuals of them
(a year moved, a negation slipped in, a name swapped) stored beside their originals, embedded with the real model."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from support import build_qdrant_store, load_jsonl, run_scan

from auditor.types import FieldMap
from detectors.twins import fact_changes

TWIN_PARAMS = {"conflicting-twins": {"review_budget": 1.0}}


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.fixture(scope="module")
def corpus(embed):  # type: ignore[no-untyped-def]
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:80]]
    year = next(i for i, t in enumerate(wiki) if any(f" {y}" in t for y in range(1800, 2000)))
    y = next(str(y) for y in range(1800, 2000) if f" {y}" in wiki[year])
    negate = next(i for i, t in enumerate(wiki) if i != year and " is a " in t)
    name = next(i for i, t in enumerate(wiki) if i not in (year, negate) and " in the United States" in t)
    twins = {
        year: _edit(wiki[year], f" {y}", f" {int(y) + 3}"),
        negate: _edit(wiki[negate], " is a ", " is not a "),
        name: _edit(wiki[name], " in the United States", " in the United Kingdom"),
    }
    # not twins: a version with a sentence added, and one with a clause reworded
    version = 10 if 10 not in twins else 11
    extra = {version: wiki[version] + " It has been the subject of several later studies and popular books."}
    texts = wiki + list(twins.values()) + list(extra.values())
    return {"wiki": wiki, "texts": texts, "vectors": embed(texts), "twins": twins, "version": version,
            "twin_rows": {o: len(wiki) + i for i, o in enumerate(twins)}, "version_row": len(texts) - 1}


def _twins(result) -> dict:  # type: ignore[no-untyped-def]
    return {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA313"}


def test_fact_changes_take_facts_and_leave_rewording_alone() -> None:
    assert fact_changes("It opened in 1889 and is 330 metres tall.", "It opened in 1887 and is 330 metres tall.",
                        2, 3) == [{"kind": "number", "before": "1889", "after": "1887"}]
    assert fact_changes("The drug is effective in children.", "The drug is not effective in children.", 2, 3) == [
        {"kind": "negation", "before": "", "after": "not"}]
    assert fact_changes("Paris is the capital of France.", "Lyon is the capital of France.", 2, 3)[0]["kind"] == "name"
    assert fact_changes("The drug works well in children.", "The drug works badly in children.", 2, 3) is None
    assert fact_changes("It opened in 1889.", "It opened in 1889. It was repainted in 1968.", 2, 3) is None
    assert fact_changes("Same text.", "same TEXT.", 2, 3) is None
    # one table filled with other numbers: many runs, not a twin
    assert fact_changes("| Sales | 1,671 | 1,612 | 3.7% | EBIT | 261 | 259 |",
                        "| Sales | 2,280 | 1,664 | 4.1% | EBIT | 473 | 187 |", 2, 3) is None


def test_twins_in_a_baseline_are_low_and_each_pair_is_reported_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus, sqlite_ledger_url: str
) -> None:
    uri = build_qdrant_store(tmp_path / "s", corpus["vectors"], [{"text": t} for t in corpus["texts"]])
    found = _twins(run_scan(uri, sqlite_ledger_url, detectors=["conflicting-twins"],
                            field_map=FieldMap(text="text"), params=TWIN_PARAMS))
    expected = {corpus["twin_rows"][o]: o for o in corpus["twins"]}
    assert set(found) == set(expected)  # the later row of each pair; the added-sentence version is no twin
    kinds = {found[p].evidence["twin"]: found[p].evidence["kinds"] for p in found}
    assert sorted(k for ks in kinds.values() for k in ks) == ["name", "negation", "number"]
    for pid, finding in found.items():
        assert finding.evidence["twin"] == expected[pid]
        assert finding.effective_severity.value == "low" and not finding.evidence["new_since_last_scan"]
        assert finding.evidence["changed_share"] < 0.2
    # by default (review_budget 0, the detector runs in every default scan) a baseline's twins are listed, not flagged
    default = _twins(run_scan(uri, sqlite_ledger_url, field_map=FieldMap(text="text")))
    assert set(default) == set(expected) and {f.effective_severity.value for f in default.values()} == {"info"}


def test_a_twin_that_arrives_beside_its_original_alerts_whatever_the_budget(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus, sqlite_ledger_url: str
) -> None:
    wiki = corpus["wiki"]
    store = tmp_path / "m"
    uri = build_qdrant_store(store, corpus["vectors"][: len(wiki)], [{"text": t} for t in wiki])
    baseline = run_scan(uri, sqlite_ledger_url, detectors=["conflicting-twins"], field_map=FieldMap(text="text"))
    assert not _twins(baseline)
    client = QdrantClient(path=str(store))
    try:
        client.upsert("docs", [
            models.PointStruct(id=row, vector=np.asarray(corpus["vectors"][row], np.float32).tolist(),
                               payload={"text": corpus["texts"][row]})
            for row in range(len(wiki), len(corpus["texts"]))
        ])
    finally:
        client.close()
    # default budget: 0.1% of 84 points leaves no alert slot, yet a new twin is over the floor
    later = _twins(run_scan(uri, sqlite_ledger_url, detectors=["conflicting-twins"], field_map=FieldMap(text="text")))
    assert set(later) == set(corpus["twin_rows"].values())
    for finding in later.values():
        assert finding.effective_severity.value == "medium" and finding.evidence["new_since_last_scan"]
        assert "new since the last scan" in finding.message and finding.score > 1.0


def test_a_series_item_and_a_title_do_not_alert(tmp_path: Path, corpus, embed, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    """A new passage beside an old one with two values changed at once (the next item of a series: a daily
    story's date and rate) is listed as INFO, not alerted; two titles a month apart state nothing: no twins."""
    wiki = corpus["wiki"]
    years = re.compile(r"\b1[89]\d\d\b")
    row = next(i for i, t in enumerate(wiki) if len(set(years.findall(t))) >= 2 and i not in corpus["twins"])
    first, second = sorted(set(years.findall(wiki[row])))[:2]
    series = _edit(_edit(wiki[row], first, str(int(first) + 1)), second, str(int(second) + 2))
    titles = ["List of killings by law enforcement officers in the United States, August 2015",
              "List of killings by law enforcement officers in the United States, October 2015"]
    store = tmp_path / "m"
    texts = [*wiki, titles[0]]
    uri = build_qdrant_store(store, embed(texts), [{"text": t} for t in texts])
    assert not _twins(run_scan(uri, sqlite_ledger_url, detectors=["conflicting-twins"],
                               field_map=FieldMap(text="text")))
    client = QdrantClient(path=str(store))
    try:
        client.upsert("docs", [
            models.PointStruct(id=len(texts) + i, vector=np.asarray(v, np.float32).tolist(), payload={"text": t})
            for i, (t, v) in enumerate(zip([series, titles[1]], embed([series, titles[1]]), strict=True))
        ])
    finally:
        client.close()
    later = _twins(run_scan(uri, sqlite_ledger_url, detectors=["conflicting-twins"], field_map=FieldMap(text="text")))
    assert set(later) == {len(texts)}  # the series item; the new title is no twin of the old one
    finding = later[len(texts)]
    assert finding.evidence["twin"] == row and finding.evidence["facts_changed"] == 2
    assert finding.evidence["new_since_last_scan"] and finding.effective_severity.value == "info"
    assert "another item of a series" in finding.message
