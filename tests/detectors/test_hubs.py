"""Hub detector on a real Qdrant store: a corpus-poisoning passage (embedding at the centroid of real questions,
token-soup text), a norm-inflated vector in a dot-product collection, and retrieval dominance over a query log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.context import ScanSettings
from auditor.types import FieldMap
from detectors.textsignals import token_soup

SOUP = ("olympics )( ##ivity roster bobcat 2k9 lanes ##ed quantum toronto ##ing ])) cathedral vs. frigates "
        "enzymes x7 ##ism mozart ##ly kilns prime")

TOPIC_BAG = ("outcome medical complications however higher mean study among pressure range performed increase lower "
             "whether determine procedures factors anticoagulation rate volume trauma laparoscopic index level "
             "performed time associated dose showed primary fundoplication score compared knee without group stroke "
             "obtained significantly difference")


@pytest.fixture(scope="module")
def corpus(embed):  # type: ignore[no-untyped-def]
    rows = load_jsonl("hotpotqa_retrieved.jsonl") + load_jsonl("wikipedia_en.jsonl")[:150]
    texts = [r["text"] for r in rows]
    questions = sorted({r["question"] for r in load_jsonl("hotpotqa_retrieved.jsonl")})
    return texts, embed(texts), questions, embed(questions)


def _hub_vector(question_vectors: np.ndarray) -> np.ndarray:
    centre = question_vectors.mean(axis=0)
    return (centre / np.linalg.norm(centre)).astype(np.float32)


def test_token_soup_separates_optimised_text_from_prose(corpus) -> None:  # type: ignore[no-untyped-def]
    texts = corpus[0]
    prose = [token_soup(t) for t in texts]
    assert token_soup(SOUP) >= 0.5
    assert np.mean(np.array(prose) >= 0.5) <= 0.01
    # another language is not soup: not even its one-line entries, whose function words do not repeat (4 of
    # these 60 scored >= 0.5 before short words counted)
    assert max(token_soup(r["text"]) for r in load_jsonl("wikipedia_es.jsonl")) < 0.5
    # a wire brief's headline: abbreviations, not fragments
    assert token_soup("NEW YORK, March 4 - Qtly div 21 cts vs 16-1/4 cts prior\n    Pay April One\n"
                      "    Record March 17\n Reuter\n&#3;") < 0.5
    # a bag of one topic's frequent words, greedily re-worded into k-NN lists (a demo hub): no fragments, a few
    # repeated short words, but no sentence in 40 words
    assert token_soup(TOPIC_BAG) >= 0.5
    assert token_soup(TOPIC_BAG.replace(" however", ". However").replace(" without", ", without")) < 0.5


def test_query_dominance_and_adversarial_hub(tmp_path: Path, corpus, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    texts, vecs, questions, qvecs = corpus
    hub = len(texts)
    all_texts = [*texts, SOUP]
    all_vecs = np.concatenate([vecs, _hub_vector(qvecs)[None, :]])
    uri = build_qdrant_store(tmp_path / "s", all_vecs, [{"text": t} for t in all_texts])
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(questions) + "\n\n", encoding="utf-8")
    result = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"),
                      settings=ScanSettings(extra={"queries_file": str(queries)}))
    assert result.status == "completed"
    got = {(r.finding.rule_id, r.finding.point_id): r.finding for r in result.findings}
    dominant = got[("VA332", hub)]
    assert dominant.evidence["retrieved_by"] >= 0.5 * len(questions) and dominant.evidence["token_soup"] >= 0.5
    assert ("VA333", hub) in got or ("VA331", hub) in got or dominant.evidence["queries"] == len(questions)
    clean_flags = {pid for (_, pid) in got if pid != hub}
    assert len(clean_flags) <= 2
    missing = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"),
                       settings=ScanSettings(extra={"queries_file": str(tmp_path / "nope.txt")}))
    assert missing.status != "completed" and "queries file" in (missing.error or "")


def test_norm_inflated_vector_is_a_hub_in_a_dot_collection(tmp_path: Path, corpus, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    texts, vecs, _, _ = corpus
    inflated = vecs.copy()
    inflated[42] *= 4.0  # mixed norms: under dot product this point outranks everyone's true neighbours
    uri = build_qdrant_store(tmp_path / "dot", inflated, [{"text": t} for t in texts], distance="dot")
    result = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"))
    hubs = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA331"}
    assert 42 in hubs and hubs[42].evidence["k_occurrence"] >= 50
    assert len(set(hubs) - {42}) <= 2
    # evidence names the first points (in point order) whose 10 nearest by dot product include the hub
    scores = inflated @ inflated.T
    np.fill_diagonal(scores, -np.inf)
    listing = [i for i in range(len(texts)) if 42 in np.argsort(-scores[i])[:10]]
    assert hubs[42].evidence["listed_by"] == listing[:10]
    # the same vectors under cosine: the norm no longer matters, no hub
    uri = build_qdrant_store(tmp_path / "cos", inflated, [{"text": t} for t in texts])
    cosine = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"))
    assert 42 not in {r.finding.point_id for r in cosine.findings}


def test_identical_vectors_make_no_hubs(tmp_path: Path, corpus, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    vecs = corpus[1]
    uri = build_qdrant_store(tmp_path / "same", np.tile(vecs[0], (60, 1)), [{"text": "same"}] * 60)
    result = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"))
    assert result.status == "completed" and not result.findings


def test_token_soup_hub_is_high_only_when_also_a_hub_by_the_k_occurrence_bar(
    tmp_path: Path, corpus, sqlite_ledger_url: str  # type: ignore[no-untyped-def]
) -> None:
    """VA333 is MEDIUM for a moderate hub with a token-soup text (templated briefs and short lists are both too);
    HIGH when the point is also a hub by VA331's bar. The same store, judged with that bar out of reach and then
    within reach of the corpus-poisoning passage, changes only the severity."""
    texts, vecs, _questions, qvecs = corpus
    hub = len(texts)
    uri = build_qdrant_store(tmp_path / "s", np.concatenate([vecs, _hub_vector(qvecs)[None, :]]),
                             [{"text": t} for t in [*texts, SOUP]])
    severities = {}
    for label, params in (("out of reach", {"z": 1e6}), ("within reach", {"z": 3.0, "min_ratio": 2.0})):
        result = run_scan(uri, sqlite_ledger_url, detectors=["hub"], field_map=FieldMap(text="text"),
                          params={"hub": {**params, "alert_budget": 1.0}})
        (finding,) = [r.finding for r in result.findings if r.finding.point_id == hub]
        assert finding.rule_id == "VA333" and finding.evidence["robust_z"] >= 3.0
        severities[label] = finding.effective_severity.name
    assert severities == {"out of reach": "MEDIUM", "within reach": "HIGH"}
