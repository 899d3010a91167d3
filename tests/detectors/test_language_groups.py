"""Language-group detector on a real Qdrant store: English Wikipedia and PubMed passages with a cluster of Spanish
Wikipedia passages among them, embedded with the real (English) model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from support import build_qdrant_store, load_jsonl, run_scan

from auditor.types import FieldMap
from detectors.language_groups import dominant_script, letter_words

PARAMS = {"language-group": {"review_budget": 1.0}}


@pytest.fixture(scope="module")
def corpus(embed):  # type: ignore[no-untyped-def]
    english = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:240]] + [
        r["text"] for r in load_jsonl("pubmed.jsonl")[:60]]
    spanish = [r["text"] for r in load_jsonl("wikipedia_es.jsonl")[:25]]
    texts = english + spanish
    return {"texts": texts, "vectors": embed(texts), "english": len(english),
            "spanish": set(range(len(english), len(texts)))}


def _groups(result):  # type: ignore[no-untyped-def]
    return [r.finding for r in result.findings if r.finding.rule_id == "VA341"]


def test_words_and_scripts() -> None:
    assert letter_words("La Torre Eiffel (1889) mide 330 m.") == ["la", "torre", "eiffel", "mide", "m"]
    assert dominant_script("Привет, мир, как дела? ok") == "CYRILLIC"
    assert dominant_script("Hello") == "LATIN" and dominant_script("1234 ---") is None


def test_a_spanish_cluster_in_an_english_store_is_one_group(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus, sqlite_ledger_url: str
) -> None:
    uri = build_qdrant_store(tmp_path / "s", corpus["vectors"], [{"text": t} for t in corpus["texts"]])
    groups = _groups(run_scan(uri, sqlite_ledger_url, detectors=["language-group"], field_map=FieldMap(text="text"),
                              params=PARAMS))
    assert len(groups) == 1  # reported once, not once per document
    group = groups[0]
    members = set(group.evidence["members"])
    # 25 passages on unrelated topics: those with no Spanish neighbour in the graph stay out of the group
    assert members <= corpus["spanish"] and len(members) >= 0.6 * len(corpus["spanish"])
    assert group.evidence["size"] == len(members) and group.evidence["script"] == "LATIN"
    assert group.effective_severity.value == "low" and group.evidence["new_since_last_scan"] is None
    assert {"de", "la"} & set(group.evidence["group_words"])
    assert group.evidence["common_word_share"] <= 0.5
    # in a default scan (review_budget 0) a group found in a baseline is listed as INFO, not flagged
    default = _groups(run_scan(uri, sqlite_ledger_url, field_map=FieldMap(text="text")))
    assert [g.evidence["members"] for g in default] == [group.evidence["members"]]
    assert default[0].effective_severity.value == "info"


def test_an_english_store_has_no_group_and_a_wave_that_arrives_alerts(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus, sqlite_ledger_url: str
) -> None:
    n = corpus["english"]
    store = tmp_path / "m"
    uri = build_qdrant_store(store, corpus["vectors"][:n], [{"text": t} for t in corpus["texts"][:n]])
    assert not _groups(run_scan(uri, sqlite_ledger_url, detectors=["language-group"], field_map=FieldMap(text="text"),
                                params=PARAMS))
    client = QdrantClient(path=str(store))
    try:
        client.upsert("docs", [models.PointStruct(id=i, vector=np.asarray(corpus["vectors"][i], np.float32).tolist(),
                                                  payload={"text": corpus["texts"][i]}) for i in corpus["spanish"]])
    finally:
        client.close()
    # default budget: no alert slot for 0.1% of 325 points, but a wave that arrived together is over the floor
    groups = _groups(run_scan(uri, sqlite_ledger_url, detectors=["language-group"], field_map=FieldMap(text="text")))
    assert len(groups) == 1
    group = groups[0]
    assert group.effective_severity.value == "medium" and group.score > 1.0
    assert group.evidence["new_since_last_scan"] == group.evidence["size"]
    assert "arrived together since the last scan" in group.message


def test_a_tenant_is_its_own_reference(tmp_path: Path, corpus, embed, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    # a Spanish tenant is not foreign to itself; the same passages filed inside the English tenant are
    spanish = sorted(corpus["spanish"])
    texts = corpus["texts"]
    payloads = [{"text": t, "tenant": "en"} for t in texts[: corpus["english"]]]
    es_texts = [r["text"] for r in load_jsonl("wikipedia_es.jsonl")[25:60]]
    payloads += [{"text": texts[i], "tenant": "en"} for i in spanish]
    payloads += [{"text": t, "tenant": "es"} for t in es_texts]
    vectors = np.concatenate([corpus["vectors"], embed(es_texts)])
    uri = build_qdrant_store(tmp_path / "t", vectors, payloads)
    groups = _groups(run_scan(uri, sqlite_ledger_url, detectors=["language-group"],
                              field_map=FieldMap(text="text", tenant="tenant"), params=PARAMS))
    assert len(groups) == 1 and groups[0].tenant == "en" and groups[0].evidence["reference"] == "tenant en"
    assert set(groups[0].evidence["members"]) <= corpus["spanish"]

