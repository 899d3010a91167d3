"""Naturalness detector (VA351) on real text: English Wikipedia summaries with a corpus-poisoning trigger and a
GASLITE passage optimised against the real model (auditor.redteam.adversarial, one HotFlip step: cheap, and still
the attack's token soup) and a burst of GARAG-style typos made by the red team's own edit function."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from support import build_qdrant_store, load_jsonl, run_scan

from auditor.errors import DetectorError
from auditor.types import FieldMap
from detectors.naturalness import NaturalnessDetector, score_documents, strengths

N_CLEAN = 400
EVERY = {"naturalness": {"review_budget": 1.0}}  # every reported finding kept at its own severity


@pytest.fixture(scope="module")
def wiki() -> list[str]:
    return [r["text"] for r in load_jsonl("wikipedia_en.jsonl")]


@pytest.fixture(scope="module")
def corpus(wiki: list[str]) -> dict:  # type: ignore[type-arg]
    from auditor.redteam.adversarial import GASLITE_INFO, GradientRetriever, concept_trigger, typo_edit

    clean = wiki[:N_CLEAN]
    rng = random.Random(7)
    retriever = GradientRetriever()
    queries = [t.split(". ")[0][:200] for t in wiki[N_CLEAN : N_CLEAN + 20]]
    soup, _ = concept_trigger(retriever, queries[:10], rng=rng, steps=1)
    gaslite, _ = concept_trigger(retriever, queries[10:], rng=rng, steps=1, info=GASLITE_INFO)
    # a typo burst: eight of a real summary's common words (>= 20 uses in the collection) edited as GARAG does
    used = Counter(w.lower() for t in clean for w in re.findall(r"[A-Za-z]+", t))
    host = next(t for t in wiki[N_CLEAN + 20 :]
                if sum(used[w.lower()] >= 20 for w in re.findall(r"[A-Za-z]{6,}", t)) >= 10)
    spans = [m for m in re.finditer(r"[A-Za-z]{6,}", host) if used[m.group().lower()] >= 20]
    typos = host
    for i in sorted(random.Random(3).sample(range(len(spans)), 8), reverse=True):
        m = spans[i]
        edit_rng = random.Random(i)
        typos = typos[: m.start()] + typo_edit(m.group(), edit_rng.choice(("swap", "delete", "insert", "keyboard")),
                                               edit_rng) + typos[m.end() :]
    attacks = {"soup": soup, "gaslite": gaslite, "typos": typos}
    return {"clean": clean, "attacks": attacks, "texts": clean + list(attacks.values()), "host": host}


def _scores(texts: list[str]) -> np.ndarray:
    p = NaturalnessDetector.defaults
    return strengths(score_documents(texts, p), p)[0]


def test_attacks_outscore_every_clean_summary(corpus) -> None:  # type: ignore[no-untyped-def]
    scores = _scores(corpus["texts"])
    clean, attacks = scores[:N_CLEAN], scores[N_CLEAN:]
    report = float(NaturalnessDetector.defaults["report_strength"])
    assert (clean < report).all(), np.sort(clean)[-5:]
    assert (attacks >= report).all(), attacks
    assert attacks.min() > clean.max()
    # a copy elsewhere vouches for the soup window's words, the document itself never does (leave-self-out)
    p = NaturalnessDetector.defaults
    alone = score_documents(corpus["texts"], p).soup[N_CLEAN]
    copied = score_documents([*corpus["texts"], corpus["attacks"]["soup"]], p).soup[N_CLEAN]
    assert alone > float(p["soup_line"]) * report > copied


def test_scan_writes_the_findings_to_the_ledger(tmp_path: Path, corpus, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    texts = corpus["texts"]
    # the detector reads text only: seeded unit vectors stand in for embeddings
    vectors = np.random.default_rng(0).normal(size=(len(texts), 16)).astype(np.float32)
    uri = build_qdrant_store(tmp_path / "s", vectors, [{"text": t} for t in texts])
    result = run_scan(uri, sqlite_ledger_url, detectors=["naturalness"], field_map=FieldMap(text="text"),
                      params=EVERY)
    found = {r.finding.point_id: r.finding for r in result.findings if r.finding.rule_id == "VA351"}
    planted = {N_CLEAN + i: name for i, name in enumerate(corpus["attacks"])}
    assert set(found) == set(planted)
    typo = found[next(p for p, n in planted.items() if n == "typos")]
    assert typo.effective_severity.value == "medium" and typo.evidence["component"] == "typo burst"
    assert len(typo.evidence["near_misses"]) >= 3 and "typo burst" in typo.message
    soup = found[next(p for p, n in planted.items() if n == "soup")]
    assert soup.evidence["component"] in ("soup window", "whole-text soup") and soup.message.startswith("token soup")
    assert soup.evidence["worst_window"] and soup.effective_severity.value in ("low", "medium")
    assert soup.threshold == pytest.approx(NaturalnessDetector.defaults["report_strength"])
    # the default budget: 403 points leave one LOW slot below the floor, findings over the floor stay MEDIUM
    default = run_scan(uri, sqlite_ledger_url, detectors=["naturalness"], field_map=FieldMap(text="text"))
    kept = {r.finding.point_id: r.finding.effective_severity.value for r in default.findings
            if r.finding.effective_severity.value != "info"}
    assert set(kept) <= set(planted) and kept[typo.point_id] == "medium" and len(kept) >= 2
    assert all(f.effective_severity.value == ("medium" if f.score >= 1.0 else "low") for f in found.values())


def test_a_small_collection_is_not_judged_and_bad_parameters_are_refused(  # type: ignore[no-untyped-def]
    tmp_path: Path, corpus, sqlite_ledger_url: str
) -> None:
    texts = [*corpus["clean"][:20], corpus["attacks"]["soup"]]
    vectors = np.random.default_rng(1).normal(size=(len(texts), 16)).astype(np.float32)
    uri = build_qdrant_store(tmp_path / "small", vectors, [{"text": t} for t in texts])
    result = run_scan(uri, sqlite_ledger_url, detectors=["naturalness"], field_map=FieldMap(text="text"))
    assert not [r for r in result.findings if r.finding.rule_id == "VA351"]
    assert any("min_documents" in n for n in result.notes)
    with pytest.raises(DetectorError, match="window"):
        run_scan(uri, sqlite_ledger_url, detectors=["naturalness"], field_map=FieldMap(text="text"),
                 params={"naturalness": {"window": 0}})
    with pytest.raises(DetectorError, match="typo_min_coverage"):
        run_scan(uri, sqlite_ledger_url, detectors=["naturalness"], field_map=FieldMap(text="text"),
                 params={"naturalness": {"typo_min_coverage": 1.5}})
