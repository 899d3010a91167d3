"""Typo bursts (detectors/typos.py, VA351's typo component) on real text: English Wikipedia summaries edited with
the red team's own GARAG-style edit function, scored against the bundled model's WordPiece vocabulary."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from support import load_jsonl

from auditor.redteam.adversarial import TYPO_OPS, typo_edit
from detectors.naturalness import NaturalnessDetector
from detectors.typos import (
    TypoIndex,
    burst_surprise,
    document_words,
    edit_kind,
    interior_edit,
    language_ranks,
    score_typos,
)

P = NaturalnessDetector.defaults
N_CLEAN = 400
_WORD = re.compile(r"\b[a-z]{4,}\b")  # whole lower-case words of >= 4 letters: what the generator edits, names aside


def misspell(text: str, edits: int, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """``edits`` distinct lower-case words of ``text`` edited as the red team's typo generator does (one random
    GARAG operation each); returns the text and the (typo, original) pairs."""
    spans = list(_WORD.finditer(text))
    done: list[tuple[str, str]] = []
    for m in sorted(rng.sample(spans, edits), key=lambda m: -m.start()):
        typo = typo_edit(m.group(), rng.choice(TYPO_OPS), rng)
        text = text[: m.start()] + typo + text[m.end() :]
        done.append((typo, m.group()))
    return text, done


@pytest.fixture(scope="module")
def wiki() -> list[str]:
    return [r["text"] for r in load_jsonl("wikipedia_en.jsonl")]


@pytest.fixture(scope="module")
def planted(wiki: list[str]) -> dict:  # type: ignore[type-arg]
    """400 clean summaries; 10 further ones with four typos each (the generator makes up to 5% of the words, at
    most 6-8), 5 with one typo."""
    rng = random.Random(11)
    hosts = [t for t in wiki[N_CLEAN:] if len(_WORD.findall(t)) >= 40]
    bursts = [misspell(t, 4, rng) for t in hosts[:10]]
    singles = [misspell(t, 1, rng) for t in hosts[10:15]]
    return {"clean": wiki[:N_CLEAN], "bursts": bursts, "singles": singles}


def test_the_language_is_the_bundled_vocabulary_in_frequency_order() -> None:
    ranks = language_ranks()
    assert ranks["the"] == 0 and ranks["of"] == 1 and ranks["and"] == 2
    assert len(ranks) > 15_000 and not [w for w in ranks if not w.isalpha() or not w.islower()]
    assert ranks["company"] < ranks["committee"] < ranks["subcommittee"]


def test_edit_kinds_are_the_generators_operations(wiki: list[str]) -> None:
    rng = random.Random(5)
    expected = {"swap": 0, "delete": 1, "insert": 2, "keyboard": 3}
    seen = 0
    for word in {w for t in wiki[:50] for w in _WORD.findall(t)}:
        op = rng.choice(TYPO_OPS)
        typo = typo_edit(word, op, rng)
        if typo == word or not interior_edit(typo, word):
            continue  # a swap of two equal letters changes nothing
        assert edit_kind(typo, word) == expected[op], (op, word, typo)
        seen += 1
    assert seen > 200
    # rare real words one edit from a common word are not edits the attack makes
    assert edit_kind("broth", "both") == 4 and edit_kind("oden", "open") == 4
    assert not interior_edit("bought", "brought"[:-1]) and not interior_edit("leaves", "leased")


def test_near_misses_name_the_misspelt_words(planted: dict) -> None:  # type: ignore[type-arg]
    texts = [*planted["clean"], *(t for t, _ in planted["bursts"])]
    index = TypoIndex([document_words(t) for t in texts])
    found = 0
    for text, edits in planted["bursts"]:
        near = {m.word: m for m in index.near_misses(document_words(text))}
        for typo, original in edits:
            if typo in near:
                assert near[typo].like == original.lower() or interior_edit(typo, near[typo].like)
                found += near[typo].like == original.lower()
    assert found >= 28  # of 40 edits: some make a real word, or misspell a word too rare to be common


def test_bursts_outscore_every_clean_summary_and_one_typo_is_normal(planted: dict) -> None:  # type: ignore[type-arg]
    clean, bursts, singles = planted["clean"], planted["bursts"], planted["singles"]
    texts = [*clean, *(t for t, _ in bursts), *(t for t, _ in singles)]
    scores = score_typos(texts, word_line=float(P["typo_word_line"]), min_misses=int(P["typo_min_misses"]),
                         min_coverage=float(P["typo_min_coverage"]))
    line, report = float(P["typo_line"]), float(P["report_strength"])
    s = scores.surprise
    assert s[: len(clean)].max() < report * line, np.sort(s[: len(clean)])[-3:]
    burst = s[len(clean) : len(clean) + len(bursts)]
    assert (burst >= line).sum() >= 8, burst
    assert (s[len(clean) + len(bursts) :] == 0).all()  # a single typo is never a burst


def test_a_wave_of_bursts_is_not_calibrated_away(wiki: list[str], planted: dict) -> None:  # type: ignore[type-arg]
    """5% of the collection misspelt: the collection's rate counts each document once, so the bursts keep their
    surprise (within a small margin of a lone burst's) and stay over the line."""
    rng = random.Random(13)
    clean = planted["clean"][:380]
    wave = [misspell(t, 4, rng)[0] for t in planted["clean"][380:]]
    kw = {"word_line": float(P["typo_word_line"]), "min_misses": 2, "min_coverage": float(P["typo_min_coverage"])}
    lone = score_typos([*clean, wave[0]], **kw).surprise[-1]
    waved = score_typos([*clean, *wave], **kw)
    assert waved.surprise[len(clean)] > 0.8 * lone
    assert (waved.surprise[len(clean) :] >= float(P["typo_line"])).mean() >= 0.85


def test_burst_surprise_is_the_poisson_tail() -> None:
    import math

    s = burst_surprise(np.array([0.0, 1.0, 2.0, 3.0]), np.array([100.0, 100.0, 100.0, 50.0]), 0.001)
    mu = 0.1
    assert s[0] == 0.0
    assert s[1] == pytest.approx(-math.log10(1 - math.exp(-mu)), rel=1e-6)
    assert s[2] == pytest.approx(-math.log10(1 - math.exp(-mu) * (1 + mu)), rel=1e-6)
    assert s[3] == pytest.approx(-math.log10(1 - math.exp(-0.05) * (1 + 0.05 + 0.05**2 / 2)), rel=1e-6)


def test_text_in_another_language_is_not_judged(planted: dict) -> None:  # type: ignore[type-arg]
    """Spanish summaries misspelt inside an English collection: near misses of English words come by chance in a
    language the vocabulary does not cover, so such a text is not judged (coverage under ``typo_min_coverage``)."""
    rng = random.Random(17)
    spanish = [misspell(r["text"], 4, rng)[0] for r in load_jsonl("wikipedia_es.jsonl")[:10]]
    clean = planted["clean"]
    scores = score_typos([*clean, *spanish], word_line=float(P["typo_word_line"]), min_misses=2,
                         min_coverage=float(P["typo_min_coverage"]))
    least = float(P["typo_min_coverage"])
    foreign = scores.coverage[len(clean) :]
    assert (foreign < least).sum() >= 8, foreign  # Spanish shares short words with English ("de", "la", "a")
    assert (scores.surprise[scores.coverage < least] == 0).all()
    assert (scores.coverage[: len(clean)] >= least).mean() > 0.99


@pytest.mark.parametrize("name", ["wikipedia_en", "pubmed", "govuk_sections", "hotpotqa_retrieved", "emails", "code",
                                  "wikipedia_es"])
def test_clean_collections_hold_no_burst(name: str) -> None:
    """Each clean test corpus as its own collection (real names, abbreviations, Spanish, code, how-to pages): no
    document reaches the report line of the typo component."""
    texts = [r["text"] for r in load_jsonl(f"{name}.jsonl")]
    scores = score_typos(texts, word_line=float(P["typo_word_line"]), min_misses=int(P["typo_min_misses"]),
                         min_coverage=float(P["typo_min_coverage"]))
    assert scores.surprise.max() < float(P["report_strength"]) * float(P["typo_line"])
