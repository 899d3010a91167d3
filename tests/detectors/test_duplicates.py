"""Near-duplicate detector on a real Qdrant store: re-ingested copies of a document are INFO, a forged vector
under a different text is MEDIUM, bit-identical copies are left to the integrity detector (VA105)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.types import FieldMap


@pytest.fixture(scope="module")
def store_rows(embed):  # type: ignore[no-untyped-def]
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:150]]
    # re-ingested with mojibake, with a source line, cut short: near-identical vectors (cosine 0.97-0.995)
    mojibake = (wiki[3] + " It’s “here”.").encode("utf-8").decode("latin-1")
    reingested = [mojibake, wiki[4] + " (Source: Wikipedia)", wiki[5][: int(len(wiki[5]) * 0.8)]]
    texts = wiki + reingested
    vecs = embed(texts)
    rng = np.random.default_rng(0)
    forged = vecs[10] + rng.normal(0, 0.004, vecs.shape[1]).astype(np.float32)
    forged /= np.linalg.norm(forged)
    texts.append(wiki[60])  # another document's text stored with (almost) the vector of document 10
    vecs = np.concatenate([vecs, forged[None, :], vecs[20:21]])
    texts.append("  ".join(wiki[20].upper().split()))  # same tokens, so a bit-identical vector: VA105, not ours
    return texts, vecs


def _scan(tmp_path: Path, texts, vecs, ledger: str, distance: str = "cosine", **kw):  # type: ignore[no-untyped-def]
    payloads = [{"text": t, "tenant": "t"} for t in texts]
    uri = build_qdrant_store(tmp_path / f"s-{distance}", vecs, payloads, distance=distance)
    return run_scan(uri, ledger, detectors=["near-duplicate", "integrity"], **kw)


@pytest.mark.parametrize("distance", ["cosine", "dot", "euclid"])
def test_reingested_copies_are_info_and_forged_vectors_are_medium(tmp_path: Path, store_rows,  # type: ignore[no-untyped-def]
                                                                   sqlite_ledger_url: str, distance: str) -> None:
    texts, vecs = store_rows
    result = _scan(tmp_path, texts, vecs, sqlite_ledger_url, distance)
    assert result.status == "completed"
    got = {(r.finding.rule_id, r.finding.point_id): r.finding for r in result.findings}
    for original, copy in ((3, 150), (4, 151), (5, 152)):
        assert ("VA311", original) in got and ("VA311", copy) in got
        assert got[("VA311", copy)].severity is None and got[("VA311", copy)].effective_severity.value == "info"
    assert ("VA312", 153) in got and ("VA312", 10) in got
    forged = got[("VA312", 153)]
    assert forged.evidence["different_text"] == [10] and forged.score > 0.9  # noise norm ~0.08
    assert forged.effective_severity.value == "medium"
    # the bit-identical copy (whitespace and case only): VA105 from integrity, nothing from us
    assert ("VA105", 154) in got and not [k for k in got if k[0].startswith("VA31") and k[1] in (20, 154)]
    # nothing else: the clean passages are distinct documents
    ours = {pid for rule, pid in got if rule.startswith("VA31")}
    assert ours == {3, 4, 5, 10, 150, 151, 152, 153}


def test_same_doc_id_is_benign_even_with_edited_text(  # type: ignore[no-untyped-def]
    tmp_path: Path, store_rows, sqlite_ledger_url: str
) -> None:
    texts, vecs = store_rows
    payloads = [{"text": t, "doc": f"d{i}"} for i, t in enumerate(texts)]
    payloads[153]["doc"] = "d10"  # forged row claims to be document 10: a re-ingestion, not a forgery
    uri = build_qdrant_store(tmp_path / "doc", vecs, payloads)
    fm = FieldMap(text="text", doc_id="doc")
    result = run_scan(uri, sqlite_ledger_url, detectors=["near-duplicate"], field_map=fm)
    got = {(r.finding.rule_id, r.finding.point_id) for r in result.findings}
    assert ("VA311", 153) in got and not any(rule == "VA312" for rule, _ in got)


def test_mixed_exact_and_near_copies_and_degenerate_stores(tmp_path: Path, store_rows, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    texts, vecs = store_rows
    # a group with a bit-identical copy and a near copy is reported here once, listing the exact copies
    t = [*texts[:150], texts[3], texts[150]]
    v = np.concatenate([vecs[:150], vecs[3:4], vecs[150:151]])
    result = run_scan(build_qdrant_store(tmp_path / "mix", v, [{"text": x} for x in t]), sqlite_ledger_url,
                      detectors=["near-duplicate"], field_map=FieldMap(text="text"))
    group = [r.finding for r in result.findings if r.finding.point_id in (3, 150, 151)]
    assert len(group) == 3 and all(f.evidence["exact_copies"] == [[3, 150]] for f in group)
    # all-identical vectors and a store smaller than k: no near-duplicate finding, no failure
    same = build_qdrant_store(tmp_path / "same", np.tile(vecs[0], (30, 1)), [{"text": "x"}] * 30)
    assert not run_scan(same, sqlite_ledger_url, detectors=["near-duplicate"]).findings
    tiny = build_qdrant_store(tmp_path / "tiny", vecs[:1], [{"text": "x"}])
    assert run_scan(tiny, sqlite_ledger_url, detectors=["near-duplicate"]).status == "completed"


def test_another_version_of_a_text_is_the_same_document_not_a_forgery(  # type: ignore[no-untyped-def]
    tmp_path: Path, embed, sqlite_ledger_url: str
) -> None:
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:60]]
    sentences = wiki[25].split(". ")
    revised = ". ".join(sentences[:-1]) + ". It was revised in a later edition with new material about its history."
    texts = [*wiki, revised]  # cosine ~0.98 to the original, word Jaccard ~0.65 but ~80% of its words shared
    result = run_scan(build_qdrant_store(tmp_path / "v", embed(texts), [{"text": t} for t in texts]),
                      sqlite_ledger_url, detectors=["near-duplicate"], field_map=FieldMap(text="text"))
    got = {(r.finding.rule_id, r.finding.point_id): r.finding for r in result.findings}
    assert not [k for k in got if k[0] == "VA312"]
    for pid in (25, 60):
        version = got[("VA311", pid)]
        assert version.evidence["versions"] is True and version.effective_severity.value == "info"
        assert "another version of the same document" in version.message


def test_one_table_filled_with_other_numbers_is_a_version_and_a_forged_vector_still_alerts(  # type: ignore[no-untyped-def]
    tmp_path: Path, embed, sqlite_ledger_url: str
) -> None:
    # TAT-QA annual-report tables: two reports' share-option tables (same rows, other numbers) embed within relative
    # distance 0.25 of each other; sentence embeddings barely see the numbers, so that is not a forged vector
    tables = load_jsonl("tatqa_tables.jsonl")
    wiki = [r["text"] for r in load_jsonl("wikipedia_en.jsonl")[:20]]
    texts = [r["text"] for r in tables] + wiki
    vectors = embed(texts)
    forged = len(texts)
    texts.append(wiki[3].replace(".", ";", 1))  # a different text stored under a copy of table 0's vector, nudged
    vectors = np.concatenate([vectors, vectors[:1] * 0.999 + vectors[1:2] * 0.001])
    result = run_scan(build_qdrant_store(tmp_path / "t", vectors, [{"text": t} for t in texts]),
                      sqlite_ledger_url, detectors=["near-duplicate"], field_map=FieldMap(text="text"))
    by_id = {r["id"]: i for i, r in enumerate(tables)}
    got = {(r.finding.rule_id, r.finding.point_id): r.finding for r in result.findings}
    for pair in (("tatqa-451", "tatqa-1147"), ("tatqa-336", "tatqa-1360")):
        for pid in (by_id[pair[0]], by_id[pair[1]]):
            version = got[("VA311", pid)]
            assert version.evidence["numbers_differ"] is True and version.effective_severity.value == "info"
            assert "other numbers" in version.message
            assert ("VA312", pid) not in got
    assert ("VA312", forged) in got and got[("VA312", forged)].effective_severity.value == "medium"
