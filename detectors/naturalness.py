"""Text naturalness: the least natural span of each document under models fitted on the collection itself — the
token soup of corpus-poisoning and GASLITE triggers or HotFlip prefixes, and GARAG-style typo bursts, read unlike
anything else the collection says."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.errors import DetectorError
from auditor.findings import ATLAS_RAG_POISONING, OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.masking import redact_text
from auditor.types import Confidence, Severity
from detectors.textsignals import token_soup
from detectors.typos import (
    TYPO_DEFAULTS,
    NearMiss,
    TypoScores,
    burst_evidence,
    burst_message,
    check_typo_params,
    score_typos,
)

UNNATURAL_SPAN = Rule(
    "VA351", "Unnatural text span (token soup or typo burst)", Severity.LOW, Confidence.LOW,
    (OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, ATLAS_RAG_POISONING),
)
#: The strength at which a finding turns MEDIUM and keeps its severity whatever the budget: each component's own
#: line (``soup_line``, ``typo_line``, ``whole_line``) maps to it.
ALERT_STRENGTH = 1.0
_LATIN = re.compile(r"[a-z]")
_WORD = re.compile(r"[^\W\d_]+|\d+(?:[.,]\d+)*|[^\w\s]")
_DIGIT = re.compile(r"\d")
_MULT = np.uint64(0x9E3779B97F4A7C15)


def words(text: str, cased: bool = True) -> list[str]:
    """Words (case kept unless ``cased`` is False), numbers (digits as ``0``) and punctuation marks: the units the
    word model reads."""
    return _WORD.findall(_DIGIT.sub("0", text if cased else text.casefold()))


def ngram_nll(seqs: Sequence[npt.NDArray[np.int64]], order: int, beta: float, alphabet: int,
              ) -> list[npt.NDArray[np.float64]]:
    """Per unit of each sequence, its negative log-likelihood (nats) under an n-gram model of ``order`` fitted on
    all the *other* sequences (leave-self-out: a document never vouches for itself; a copy elsewhere does).

    Units are non-negative integers (code points, word ids); ``alphabet`` is the size of the unit set (the base
    distribution is uniform over it). Each order backs off to the one below with a Dirichlet prior:
    ``p_k = (c_k + beta * p_{k-1}) / (c_ctx + beta)``, counts hashed (64-bit) so the model is a few sorted arrays.
    Returns float64 arrays of the sequences' lengths."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    pad = order - 1
    stream = np.concatenate([np.concatenate([np.full(pad, -1, np.int64), np.asarray(s, np.int64)]) for s in seqs]
                            ) if len(seqs) else np.zeros(0, np.int64)
    doc = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths + pad)
    units = (stream + 2).astype(np.uint64)  # padding -1 -> 1, a unit u -> u + 2
    total = int(units.size)
    own_total = (lengths + pad)[doc]
    p = np.full(total, 1.0 / max(alphabet, 1), np.float64)
    prev_hash = np.zeros(total, np.uint64)
    prev_loo = (total - own_total).astype(np.float64)  # the order-0 "context": every unit of the other documents
    with np.errstate(over="ignore"):
        for _k in range(1, order + 1):
            shifted = np.empty_like(prev_hash)
            shifted[0] = np.uint64(0)
            shifted[1:] = prev_hash[:-1]
            h = shifted * _MULT + units
            h ^= h >> np.uint64(29)
            loo = _leave_self_out_counts(h, doc)
            # the context: every unit of the other documents, else the (k-1)-gram that ends one unit earlier
            ctx = prev_loo if _k == 1 else np.concatenate([[0.0], prev_loo[:-1]])
            p = (loo + beta * p) / (ctx + beta)
            prev_hash, prev_loo = h, loo
    nll = -np.log(np.clip(p, 1e-300, 1.0))
    keep = np.concatenate([np.concatenate([np.zeros(pad, bool), np.ones(n, bool)]) for n in lengths]
                          ) if len(seqs) else np.zeros(0, bool)
    nll = nll[keep]
    return list(np.split(nll, np.cumsum(lengths)[:-1])) if len(seqs) else []


def _leave_self_out_counts(h: npt.NDArray[np.uint64], doc: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Per position, how often its hash occurs in the other documents."""
    _, inv, counts = np.unique(h, return_inverse=True, return_counts=True)
    key = doc * np.int64(len(counts)) + inv.astype(np.int64)
    _, inv_own, own = np.unique(key, return_inverse=True, return_counts=True)
    return (counts[inv] - own[inv_own]).astype(np.float64)


def worst_window(nll: npt.NDArray[np.float64], window: int) -> tuple[float, int]:
    """The highest mean of ``window`` consecutive values (the whole array when shorter) and where it starts."""
    if nll.size == 0:
        return 0.0, 0
    if nll.size <= window:
        return float(nll.mean()), 0
    c = np.concatenate([[0.0], np.cumsum(nll)])
    means = (c[window:] - c[:-window]) / window
    i = int(np.argmax(means))
    return float(means[i]), i


def _capped(tokens: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Per word: whether it starts with a capital letter or has no letter of the Latin alphabet (a name, a number,
    a punctuation mark, a word of another script)."""
    return np.array([t[:1].isupper() or not _LATIN.search(t) for t in tokens], bool)


# -- scoring ----------------------------------------------------------------------------------------------------
@dataclass
class DocumentScores:
    """Per document (float64 / int arrays of the collection's length): ``soup`` the robust z of its least natural
    window (mean word negative log-likelihood under the collection's leave-self-out n-gram model, against every
    document's worst window), ``raw`` that window's mean cost, ``spans`` its word span, ``near`` the near misses
    counted as typo-like (:class:`detectors.typos.NearMiss`, weight >= ``typo_word_line``), ``typo`` the surprise
    of their number (-log10 p, :func:`detectors.typos.burst_surprise`), ``whole`` the token-soup scale of the whole
    text (:func:`detectors.textsignals.token_soup`, in [0, 1])."""

    soup: npt.NDArray[np.float64]
    raw: npt.NDArray[np.float64]
    spans: list[tuple[int, int]]
    near: list[list[NearMiss]]
    typo: npt.NDArray[np.float64]
    whole: npt.NDArray[np.float64]
    tokens: list[list[str]] = field(repr=False)


def score_documents(texts: Sequence[str], params: Mapping[str, Any], typos: TypoScores | None = None,
                    ) -> DocumentScores:
    """Fit the collection's models on ``texts`` and score each of them (leave-self-out); see :class:`DocumentScores`.
    ``params``: the detector's (:attr:`NaturalnessDetector.defaults`); ``typos``: the texts' typo scores when already
    computed (:func:`detectors.typos.score_typos`). Documents of fewer than ``min_words`` words get soup z 0 (too
    short to have a least natural span)."""
    p = params
    order, beta, window, cased = int(p["order"]), float(p["beta"]), int(p["window"]), bool(p["cased"])
    name_cap, scale_quantile = float(p["name_cap"]), float(p["scale_quantile"])
    tokens = [words(t, cased) for t in texts]
    vocab: dict[str, int] = {}
    seqs = [np.array([vocab.setdefault(w, len(vocab)) for w in ws], np.int64) for ws in tokens]
    nll = ngram_nll(seqs, order, beta, len(vocab) + 1)
    if name_cap > 0 and any(x.size for x in nll):
        # a rare name (capitalised) or a word of another script costs no more than the collection's
        # ``name_cap`` quantile of all word costs: lists of names are natural, lower-case rare words are not
        cap = float(np.quantile(np.concatenate(nll), name_cap))
        nll = [np.where(_capped(ws), np.minimum(x, cap), x) for x, ws in zip(nll, tokens, strict=True)]
    worst = [worst_window(x, window) for x in nll]
    raw = np.array([w for w, _ in worst], np.float64)
    long_enough = np.array([len(ws) >= int(p["min_words"]) for ws in tokens], bool)
    ref = raw[long_enough]
    soup = np.zeros(len(texts), np.float64)
    if ref.size >= 2:
        median = float(np.median(ref))
        spread = (float(np.quantile(ref, scale_quantile)) - median if scale_quantile > 0
                  else 1.4826 * float(np.median(np.abs(ref - median))))
        soup = np.where(long_enough, (raw - median) / max(spread, 1e-9), 0.0)
    spans = [(i, min(i + window, len(ws))) for (_, i), ws in zip(worst, tokens, strict=True)]
    if typos is None:
        typos = score_typos(texts, word_line=float(p["typo_word_line"]), min_misses=int(p["typo_min_misses"]),
                            min_coverage=float(p["typo_min_coverage"]))
    word_line = float(p["typo_word_line"])
    near = [[m for m in ms if m.weight >= word_line] for ms in typos.near]
    whole = np.array([token_soup(t) for t in texts], np.float64)
    return DocumentScores(soup, raw, spans, near, typos.surprise, whole, tokens)


#: The components of a document's strength: (name, parameter holding its line).
COMPONENTS = (("soup window", "soup_line"), ("typo burst", "typo_line"), ("whole-text soup", "whole_line"))


def strengths(scores: DocumentScores, params: Mapping[str, Any]) -> tuple[npt.NDArray[np.float64], list[str]]:
    """Per document: its strength, the largest of soup z / ``soup_line``, typo surprise / ``typo_line`` and the
    whole text's token-soup scale / ``whole_line`` (1.0 = :data:`ALERT_STRENGTH`, where a finding turns MEDIUM),
    and the name of the component that gave it."""
    parts = np.stack([scores.soup / float(params["soup_line"]), scores.typo / float(params["typo_line"]),
                      scores.whole / float(params["whole_line"])])
    best = np.argmax(parts, axis=0)
    return parts.max(axis=0), [COMPONENTS[int(b)][0] for b in best]


class NaturalnessDetector(Detector):
    """Documents with an unnatural span, judged by the collection's own text (and, for typos, by the bundled
    model's vocabulary) — nothing downloaded, so wire news, tables, code or Spanish each set their own norm:

    * **token soup** — a word n-gram model (``order``; unigram by default, Dirichlet-smoothed with ``beta``) is
      fitted on every *other* document (leave-self-out: a document never vouches for itself); each document's
      least natural window of ``window`` words (highest mean negative log-likelihood) is compared with every
      document's worst window as a robust z (median, MAD). Optimised trigger text (corpus poisoning, GASLITE,
      HotFlip prefixes) is a run of words that rarely occur and never follow each other;
    * **typo burst** — GARAG-style character edits (:mod:`detectors.typos`): words the language (the bundled
      model's WordPiece vocabulary) does not know and no other document uses, one interior edit (first and last
      letter kept) from a common word of the language or the collection, each weighed by how much it looks like a
      planted edit (the kind of edit, how common the word it misspells is, whether that word is also in the
      document, capitals, spelling); the near misses weighing at least ``typo_word_line`` are counted, and a
      count of at least ``typo_min_misses`` is scored by its Poisson surprise (-log10 p) against the collection's
      own rate for a document of its length. One typo is normal, several in one short text are not. A document
      whose words the language and the collection cover less than ``typo_min_coverage`` (a page in another
      language, placeholder text) is not judged.

    * **whole-text soup** — the token-soup scale of the whole text (:func:`detectors.textsignals.token_soup`: few
      function words, fragments, no punctuation; layout such as tables and lists set aside), the hub detector's
      VA333 signal without the hub: a corpus-poisoning sequence is soup from its first word to its last.

    Strength: the largest of soup z / ``soup_line``, typo surprise / ``typo_line`` and the whole text's scale /
    ``whole_line`` (:func:`strengths`); reported (LOW) from
    ``report_strength``, MEDIUM from 1.0, the rule's alert floor (findings under it share the detector's review
    budget: the strongest 0.1% stay LOW, the rest INFO). The three lines were chosen leave-one-corpus-out on the
    development corpora (benchmarks/results/naturalness.md). Evidence: the component, the worst window (masked), its
    z, the whole text's scale, the typo surprise, the counted near misses, the words they seem to misspell (masked)
    and their weights."""

    name = "naturalness"
    version = "2"
    description = "a document with an unnatural span: token soup of optimised triggers or a burst of typos"
    rules = (UNNATURAL_SPAN,)
    requires = frozenset({"text"})
    budgeted_rules = frozenset({"VA351"})
    alert_floors: ClassVar[dict[str, float]] = {"VA351": ALERT_STRENGTH}
    #: opt-in (``--detector naturalness``): white-box prefixes and sparse typos are not caught at the budget
    enabled_by_default = False
    defaults: ClassVar[dict[str, Any]] = {
        "order": 1, "beta": 5.0, "window": 12, "cased": True, "name_cap": 0.9, "scale_quantile": 0.9, "min_words": 8,
        "soup_line": 3.731, "whole_line": 0.706, **TYPO_DEFAULTS,
        "report_strength": 0.7, "min_documents": 50,
    }

    def begin(self, ctx: ScanContext) -> None:
        p = self.params
        for key in ("order", "window", "min_words", "min_documents"):
            if int(p[key]) < 1:
                raise DetectorError(f"parameter {key!r} of detector {self.name!r} must be at least 1, got {p[key]}",
                                    hint=f"write it like `{key} = {self.defaults[key]}` under [detectors.{self.name}]")
        for key in ("beta", "soup_line", "whole_line"):
            if float(p[key]) <= 0:
                raise DetectorError(f"parameter {key!r} of detector {self.name!r} must be positive, got {p[key]}",
                                    hint=f"write it like `{key} = {self.defaults[key]}` under [detectors.{self.name}]")
        check_typo_params(self.name, p)

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        rows = [i for i, t in enumerate(table.texts) if isinstance(t, str) and t.strip()]
        if len(rows) < int(self.params["min_documents"]):
            ctx.note(f"naturalness: {len(rows)} documents with text, fewer than min_documents "
                     f"({self.params['min_documents']}): no collection model fitted")
            return
        p = self.params
        texts = [str(table.texts[i]) for i in rows]
        scores = score_documents(texts, p)
        strength, component = strengths(scores, p)
        report = float(p["report_strength"])
        floor = self.floors().get("VA351", ALERT_STRENGTH)
        for j in np.flatnonzero(strength >= report):
            row, z, near, kind = rows[int(j)], float(scores.soup[j]), scores.near[j], component[int(j)]
            a, b = scores.spans[j]
            span = " ".join(scores.tokens[j][a:b])
            evidence: dict[str, Any] = {
                "component": kind, "soup_z": round(z, 3), "worst_window": redact_text(span, limit=200),
                "window_nll": round(float(scores.raw[j]), 4), "whole_text_soup": round(float(scores.whole[j]), 3),
                **burst_evidence(near, float(scores.typo[j])),
                "lines": {name: float(p[key]) for name, key in COMPONENTS},
            }
            if kind == "soup window":
                message = (f"token soup: its least natural {b - a} words ({redact_text(span, limit=80)!r}) score "
                           f"z {z:.1f} against the collection's worst windows (line {p['soup_line']:g})")
            elif kind == "whole-text soup":
                message = (f"token soup: the whole text reads as a bag of tokens (scale {scores.whole[j]:.2f}, "
                           f"line {p['whole_line']:g}), least natural words {redact_text(span, limit=80)!r}")
            else:
                message = burst_message(near, float(scores.typo[j]), float(p["typo_line"]))
            s = float(strength[j])
            yield Finding(UNNATURAL_SPAN, self.name, table.ids[row], s, message, report, evidence,
                          table.tenants[row], severity=Severity.MEDIUM if s >= floor else Severity.LOW)
