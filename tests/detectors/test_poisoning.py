"""Poison-cluster detector on a real Qdrant store: PoisonedRAG authors' passages planted among the clean hotpotqa
passages retrieved for the same questions, in both forms (with the question bait and passage alone)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from conftest import load_jsonl
from support import build_qdrant_store, run_scan

from auditor.types import FieldMap
from detectors.poisoning import PoisonClusterDetector
from detectors.textsignals import readable, salient_terms, slot_substitution, term_agreement, term_profile


@pytest.fixture(scope="module")
def planted(embed):  # type: ignore[no-untyped-def]
    clean = load_jsonl("hotpotqa_retrieved.jsonl") + load_jsonl("wikipedia_en.jsonl")[:120]
    poison = load_jsonl("poisonedrag.jsonl")
    questions = sorted({p["target_id"] for p in poison})
    bait_q, alone_q = questions[:4], questions[4:8]
    with_bait = [p["question"] + "." + p["text"] for p in poison if p["target_id"] in bait_q]
    alone = [p["text"] for p in poison if p["target_id"] in alone_q]
    texts = [r["text"] for r in clean] + with_bait + alone
    n = len(clean)
    return {
        "texts": texts, "vectors": embed(texts), "clean": n,
        "bait": set(range(n, n + len(with_bait))), "alone": set(range(n + len(with_bait), len(texts))),
    }


def _scan(tmp_path: Path, ledger: str, texts, vectors, field_map: FieldMap | None = None, **payload_extra):  # type: ignore[no-untyped-def]
    payloads = [{"text": t, "tenant": "kb", **{k: v[i] for k, v in payload_extra.items()}} for i, t in enumerate(texts)]
    uri = build_qdrant_store(tmp_path / "store", vectors, payloads)
    return run_scan(uri, ledger, detectors=["poison-cluster"], field_map=field_map or FieldMap(text="text"))


def _by_rule(result) -> dict[str, set[int]]:  # type: ignore[no-untyped-def]
    out: dict[str, set[int]] = {}
    for r in result.findings:
        out.setdefault(r.finding.rule_id, set()).add(r.finding.point_id)
    return out


def test_poisons_with_question_bait_are_all_found_and_only_they(tmp_path: Path, planted,  # type: ignore[no-untyped-def]
                                                                 sqlite_ledger_url: str) -> None:
    result = _scan(tmp_path, sqlite_ledger_url, planted["texts"], planted["vectors"])
    assert result.status == "completed"
    by_rule = _by_rule(result)
    assert by_rule.get("VA321", set()) == planted["bait"]  # every bait passage, no clean passage
    bait = next(r.finding for r in result.findings if r.finding.rule_id == "VA321")
    assert bait.effective_severity.value == "high" and len(bait.evidence["shared_question"].split()) >= 6
    assert len(bait.evidence["members"]) >= 3 and bait.evidence["similarities"]
    assert any("AML.T0070" in t for t in bait.tags) and any("LLM04" in t for t in bait.tags)
    # the passage-only poisons (no bait) are VA322, a claim cluster naming the same things as its members
    claim = next(r.finding for r in result.findings
                 if r.finding.rule_id == "VA322" and r.finding.point_id in planted["alone"])
    assert set(claim.evidence["signals"]) == {"paraphrase_partners", "entity_agreement", "claim_novelty",
                                              "cohesion_gap"}
    assert len(claim.evidence["members"]) >= 3 and len(claim.evidence["shared_entities"]) >= 2
    assert len(set(claim.evidence["members"]) & planted["alone"]) >= 3


def test_passage_only_poisons_meet_the_target_without_clean_false_positives(  # type: ignore[no-untyped-def]
    tmp_path: Path, planted, sqlite_ledger_url: str
) -> None:
    # the slice holds template passages of one entity (1923-1951 Birthday Honours, 1975-2002 Texas Tech
    # seasons) that the first VA322 scored like poison
    by_rule = _by_rule(_scan(tmp_path, sqlite_ledger_url, planted["texts"], planted["vectors"]))
    assert len(planted["alone"] & by_rule.get("VA322", set())) >= 0.8 * len(planted["alone"])
    flagged = set().union(*by_rule.values()) if by_rule else set()
    assert len(flagged - planted["bait"] - planted["alone"]) <= 2  # <= 0.6% of the 310 clean passages
    templates = {i for i, t in enumerate(planted["texts"][: planted["clean"]])
                 if "Birthday Honours" in t[:40] or "Texas Tech Red Raiders" in t[:60]}
    assert len(templates) >= 10 and not templates & flagged


def test_template_passages_are_slot_substitutions_and_poisons_are_paraphrases() -> None:
    clean = [r["text"] for r in load_jsonl("hotpotqa_retrieved.jsonl")]
    honours = [t for t in clean if "Birthday Honours" in t[:40]]
    seasons = [t for t in clean if "Texas Tech Red Raiders football team" in t[:60]]
    assert len(honours) >= 5 and len(seasons) >= 5
    for series in (honours, seasons):
        for a, b in pairwise(series):
            assert slot_substitution(term_profile(a), term_profile(b)), (a[:60], b[:60])
    poison = load_jsonl("poisonedrag.jsonl")
    by_target: dict[str, list[str]] = {}
    for p in poison:
        by_target.setdefault(p["target_id"], []).append(p["text"])
    substituted = agreeing = pairs = 0
    for texts in by_target.values():
        for a, b in pairwise(texts):
            pa, pb = term_profile(a), term_profile(b)
            pairs += 1
            substituted += slot_substitution(pa, pb)
            agreeing += term_agreement(pa.terms, pb.terms) >= PoisonClusterDetector.defaults["entity_agreement"]
    assert substituted <= 0.1 * pairs and agreeing >= 0.8 * pairs
    # a daily wire series (written here in the style of 1980s newswire, trailer character reference kept): the
    # stories are number-rich, so every small number shows up somewhere in each; their datelines differ in place
    series = [
        f"NEW YORK, March {day} - The Federal Reserve {verb} the government securities market to supply "
        f"{amount} billion dlrs of temporary reserves, dealers said.\n    Fed funds traded at {rate} pct, "
        f"against {rate2} pct at yesterday's close, in a 14-day statement period ending March 11.\n Reuter\n&#3;"
        for day, verb, amount, rate, rate2 in (
            (3, "entered", "1.5", "6-1/4", "6.18"), (4, "is expected to enter", "two", "6-3/16", "6.22"),
            (6, "entered", "one", "5-15/16", "5.99"))
    ]
    for a, b in pairwise(series):
        assert slot_substitution(term_profile(a), term_profile(b)), (a[:30], b[:30])
    # the old rule compared each dateline's day with every number of the other story and missed these
    assert not any(slot_substitution(term_profile(a)._replace(subject_form=(), subject_numbers=()), term_profile(b))
                   for a, b in pairwise(series))
    # a character reference is the character it names: the wire trailer "&#3;" is not the number 3
    assert term_profile("Reuter\n&#3;").terms == {"reuter"} and readable("AT&amp;T &lt;b&gt;") == "AT&T <b>"
    assert readable("Terms&notice") == "Terms&notice"  # HTML5's legacy forms without ";" are left alone
    # names and numbers: possessives, ordinals and sentence-initial adverbs are handled
    assert salient_terms("Remarkably, Jerry Glanville's team won on the 30th, in 1977.") == [
        "jerry", "glanville", "30", "1977"]


def test_ingestion_burst_raises_the_claim_score(tmp_path: Path, planted, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    texts, vectors = planted["texts"], planted["vectors"]
    spread = [float(i * 3600) for i in range(len(texts))]
    burst = list(spread)
    for row in planted["alone"]:
        burst[row] = 1_700_000_000.0 + row  # all within minutes
    fm = FieldMap(text="text", timestamp="ts")
    slow = _scan(tmp_path / "a", sqlite_ledger_url, texts, vectors, fm, ts=spread)
    fast = _scan(tmp_path / "b", sqlite_ledger_url, texts, vectors, fm, ts=burst)

    def scores(result):  # type: ignore[no-untyped-def]
        return {r.finding.point_id: r.finding.score for r in result.findings if r.finding.rule_id == "VA322"}

    common = set(scores(slow)) & set(scores(fast)) & planted["alone"]
    assert common and all(scores(fast)[p] >= scores(slow)[p] for p in common)
    assert any(scores(fast)[p] > scores(slow)[p] for p in common)
    assert len(set(scores(fast)) & planted["alone"]) >= len(set(scores(slow)) & planted["alone"])
    spans = [r.finding.evidence["ingestion_span_seconds"] for r in fast.findings
             if r.finding.point_id in planted["alone"] and "ingestion_span_seconds" in r.finding.evidence]
    assert spans and min(spans) < 3600  # a group made only of the burst-ingested poisons


def test_duplicated_clean_passages_are_not_a_poison_cluster(tmp_path: Path, planted, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    # the same clean passage ingested four times (benign re-ingestion) is one document, not a coordinated group
    clean = planted["texts"][: planted["clean"]]
    texts = clean + [clean[7] + suffix for suffix in (" ", " (cached)", " [1]", " - Wikipedia")]
    vectors = np.concatenate([planted["vectors"][: planted["clean"]],
                              np.repeat(planted["vectors"][7:8], 4, axis=0)])
    result = _scan(tmp_path, sqlite_ledger_url, texts, vectors)
    flagged = {r.finding.point_id for r in result.findings}
    assert not flagged & {7, *range(len(clean), len(texts))}


def test_no_text_field_skips_and_tiny_store_is_quiet(tmp_path: Path, planted, sqlite_ledger_url: str) -> None:  # type: ignore[no-untyped-def]
    uri = build_qdrant_store(tmp_path / "t", planted["vectors"][:2], [{"text": "a?"}, {"text": "b?"}])
    tiny = run_scan(uri, sqlite_ledger_url, detectors=["poison-cluster"], field_map=FieldMap(text="text"))
    assert tiny.status == "completed" and not tiny.findings
    none = run_scan(uri, sqlite_ledger_url, detectors=["poison-cluster"], field_map=FieldMap())
    assert any("poison-cluster skipped" in n for n in none.notes)


def test_a_claim_the_neighbourhood_repeats_is_info_and_poisons_still_alert(  # type: ignore[no-untyped-def]
    tmp_path: Path, planted, embed, sqlite_ledger_url: str
) -> None:
    # BIPIA's templated bank e-mails ("Hi David, ... charged your Mercury account ... by ACH") name the same things
    # packed together like a poisoning group, but a dozen e-mails around them say the same: an honest claim
    emails = [r["text"] for r in load_jsonl("emails.jsonl")]
    alone = [planted["texts"][i] for i in sorted(planted["alone"])]
    texts = emails + alone
    vectors = np.concatenate([embed(emails), planted["vectors"][sorted(planted["alone"])]])
    result = _scan(tmp_path, sqlite_ledger_url, texts, vectors)
    claims = [r.finding for r in result.findings if r.finding.rule_id == "VA322"]
    honest = [f for f in claims if f.point_id < len(emails)]
    assert honest and all(f.effective_severity.value == "info" for f in honest)
    assert all(len(f.evidence["claim_support"]) > 2 for f in honest)
    assert all(set(f.evidence["claim_support"]) < set(range(len(emails))) for f in honest)
    poisons = [f for f in claims if f.point_id >= len(emails)]
    assert len(poisons) >= 0.8 * len(alone)
    assert all(f.effective_severity.value == "medium" and "claim_support" not in f.evidence for f in poisons)


def _monitored_scans(tmp_path: Path, name: str, texts, vectors, first: list[int], later: list[int]):  # type: ignore[no-untyped-def]
    """Scan a store of rows ``first`` (the baseline), add rows ``later`` to it and scan again into the same ledger;
    point ids are row numbers. Returns both scans' VA322 findings by point id (the later scan's when both)."""
    from qdrant_client import QdrantClient, models

    ledger = f"sqlite:///{tmp_path / name}.db"
    store = tmp_path / name
    uri = build_qdrant_store(store, vectors[first], [{"text": texts[i]} for i in first], ids=first)
    scans = [run_scan(uri, ledger, detectors=["poison-cluster"], field_map=FieldMap(text="text"))]
    if later:
        client = QdrantClient(path=str(store))
        try:
            client.upsert("docs", [models.PointStruct(id=i, vector=np.asarray(vectors[i], np.float32).tolist(),
                                                      payload={"text": texts[i]}) for i in later])
        finally:
            client.close()
        scans.append(run_scan(uri, ledger, detectors=["poison-cluster"], field_map=FieldMap(text="text")))
    return {r.finding.point_id: r.finding for r in scans[-1].findings if r.finding.rule_id == "VA322"}


def test_provenance_a_wave_that_arrives_together_outranks_a_group_assembled_over_scans(  # type: ignore[no-untyped-def]
    tmp_path: Path, planted
) -> None:
    texts, vectors = planted["texts"], planted["vectors"]
    clean = list(range(planted["clean"]))
    alone = sorted(planted["alone"])
    # one scan of everything: no history, no provenance
    once = _monitored_scans(tmp_path, "once", texts, vectors, clean + alone, [])
    assert once and all("arrival" not in f.evidence for f in once.values())
    # the poisons arrive together after the baseline: an ingest wave
    wave = _monitored_scans(tmp_path, "wave", texts, vectors, clean, alone)
    # two of every poisoned question's five passages were there at the baseline, the rest arrive later
    poison = load_jsonl("poisonedrag.jsonl")
    alone_q = sorted({p["target_id"] for p in poison})[4:8]
    by_question: dict[str, list[int]] = {}
    for row, p in zip(alone, (p for p in poison if p["target_id"] in alone_q), strict=True):
        by_question.setdefault(p["target_id"], []).append(row)
    early = [rows[j] for rows in by_question.values() for j in (0, 2)]
    late = [i for i in alone if i not in early]
    spread = _monitored_scans(tmp_path, "spread", texts, vectors, clean + early, late)

    caught = {p for p in once if p in planted["alone"]}
    assert {p for p in wave if p in planted["alone"]} >= caught
    together = [f for p, f in wave.items() if p in caught and f.evidence["arrival"]["together"]]
    assert together and all(f.evidence["arrival"]["scans"] == [0] for f in together)
    assert all(f.score >= once[f.point_id].score for f in together)
    assert any(f.score > once[f.point_id].score for f in together)
    apart = [f for p, f in spread.items() if p in caught and p in late and f.evidence["arrival"]["spread"] >= 0.5]
    assert apart and all(f.score <= once[f.point_id].score for f in apart)
    assert any(f.score < once[f.point_id].score for f in apart)
    assert all(not f.evidence["arrival"]["together"] and 0 in f.evidence["arrival"]["scans"] for f in apart)


def _sliding_chunks(text: str, size: int = 420, overlap: int = 140) -> list[str]:
    """A character splitter with overlap, as RAG ingestion writes a long document (words cut at both edges)."""
    return [text[i : i + size] for i in range(0, max(1, len(text) - overlap), size - overlap)]


def test_overlapping_chunks_of_one_document_are_one_document_not_a_cluster(  # type: ignore[no-untyped-def]
    tmp_path: Path, planted, embed, sqlite_ledger_url: str
) -> None:
    """Neighbouring chunks of one page repeat their boundary text verbatim and name the same things: one
    document, never "distinct passages" agreeing on a claim. The passage-alone poisons beside them still alert."""
    from detectors.textsignals import consecutive_chunks

    pages = sorted((r["text"] for r in load_jsonl("pubmed.jsonl")), key=len)[-12:]
    chunks = [c for page in pages for c in _sliding_chunks(page)]
    assert all(consecutive_chunks(a, b) for page in pages for a, b in pairwise(_sliding_chunks(page)))
    poison = load_jsonl("poisonedrag.jsonl")
    assert not any(consecutive_chunks(a["text"], b["text"]) for a in poison for b in poison if a is not b)
    n = len(planted["texts"])
    texts = planted["texts"] + chunks
    result = _scan(tmp_path, sqlite_ledger_url, texts, np.concatenate([planted["vectors"], embed(chunks)]))
    by_rule = _by_rule(result)
    assert not set().union(*by_rule.values()) & set(range(n, len(texts)))  # not even INFO
    assert len(planted["alone"] & by_rule.get("VA322", set())) >= 0.8 * len(planted["alone"])


def test_sections_under_one_heading_are_one_publication_not_a_cluster(  # type: ignore[no-untyped-def]
    tmp_path: Path, planted, embed, sqlite_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOV.UK pages split at headings: the "Countersignatories" sections of a passport page's variants and the
    "Statistics" sections of each school year in the maths curriculum name the same things and pack together.
    Sections that open with one heading are one publisher's structure; the poisons beside them still alert."""
    import detectors.poisoning as poisoning
    from detectors.textsignals import section_heading

    gov = [r["text"] for r in load_jsonl("govuk_sections.jsonl")]
    headed = {i for i, t in enumerate(gov) if section_heading(t) in ("countersignatories", "statistics")}
    assert len(headed) >= 6 and section_heading(planted["texts"][planted["clean"]]) is None
    texts = gov + [planted["texts"][i] for i in sorted(planted["alone"])]
    vectors = embed(texts)
    alone = set(range(len(gov), len(texts)))

    def scan(folder: str) -> dict[str, set[int]]:
        return _by_rule(_scan(tmp_path / folder, sqlite_ledger_url, texts, vectors))

    by_rule = scan("a")
    assert not set().union(*by_rule.values()) & headed
    assert len(alone & by_rule.get("VA322", set())) >= 0.8 * len(alone)
    monkeypatch.setattr(poisoning, "section_heading", lambda text: None)
    assert set().union(*scan("b").values()) & headed  # without the heading rule the sections were a "cluster"
