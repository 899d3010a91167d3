"""Indirect prompt injection hidden in stored documents: override phrasing, fake role markers, tool-call syntax,
exfiltration links, hidden text, encoded payloads, and plain-language tasks addressed to the assistant."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import ATLAS_PROMPT_INJECTION_INDIRECT, OWASP_PROMPT_INJECTION, Finding, Rule
from auditor.masking import redact_text
from auditor.types import Confidence, RecordBatch, Severity
from detectors.patterns import injection_rules as pat
from detectors.patterns.injection_scorer import WEIGHTS, SentenceScorer, default_scorer, sentences

_TAGS = (OWASP_PROMPT_INJECTION, ATLAS_PROMPT_INJECTION_INDIRECT)
OVERRIDE = Rule("VA511", "Instruction-override phrasing in a document", Severity.HIGH, Confidence.HIGH, _TAGS)
ROLE_MARKER = Rule("VA512", "Fake chat role or system marker in a document", Severity.HIGH, Confidence.HIGH, _TAGS)
TOOL_CALL = Rule("VA513", "Tool or function-call syntax in a document", Severity.MEDIUM, Confidence.MEDIUM, _TAGS)
EXFIL_LINK = Rule("VA514", "Data-exfiltration link (image or templated query string)", Severity.HIGH,
                  Confidence.MEDIUM, _TAGS)
HIDDEN_TEXT = Rule("VA515", "Hidden text (tag characters, zero-width, bidi, HTML comment, CSS-hidden)",
                   Severity.HIGH, Confidence.MEDIUM, _TAGS)
ENCODED = Rule("VA516", "Encoded payload that decodes to instructions", Severity.HIGH, Confidence.MEDIUM, _TAGS)
ADDRESSED = Rule("VA517", "Task addressed to the assistant, not the reader", Severity.MEDIUM, Confidence.MEDIUM, _TAGS)
LEARNED = Rule("VA518", "Sentence scored as an injected instruction by the learned scorer", Severity.MEDIUM,
               Confidence.LOW, _TAGS)

SPAN_CHARS = 160
EMBEDDING_WEIGHTS = Path(pat.__file__).with_name("injection_embedding.json")
#: Unit text embeddings ``(n, 384)`` float32 of all-MiniLM-L6-v2 for a list of texts.
Encode = Callable[[list[str]], np.ndarray]

# Letters of alphabets that separate words with spaces and give zero-width characters no role inside a word
# (Latin, Greek, Cyrillic, Armenian and their extensions). Scripts that join letters (Arabic, Indic: ZWJ/ZWNJ) or
# write without spaces (Thai, CJK: ZWSP as a break hint) use them legitimately, so they are left out.
_SPACED_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u0370-\u03ff\u0400-\u052f\u0531-\u0587\u1e00-\u1fff"
_ZERO_WIDTH_CHARS = "\u200b\u200c\u200d\u2060\ufeff\u180e"
ZERO_WIDTH_IN_WORD = re.compile(f"(?<=[{_SPACED_LETTERS}])[{_ZERO_WIDTH_CHARS}]+(?=[{_SPACED_LETTERS}])")


def _clip(text: str) -> str:
    text = pat.ZERO_WIDTH.sub("", text).replace("\n", " ")
    return text if len(text) <= SPAN_CHARS else text[: SPAN_CHARS - 1] + "…"


def normalise(text: str) -> str:
    """NFKC, invisible characters removed, tag characters mapped to the ASCII they smuggle."""
    text = pat.TAG_CHARS.sub(lambda m: "".join(chr(ord(c) - 0xE0000) for c in m.group()), text)
    return unicodedata.normalize("NFKC", pat.BIDI.sub("", pat.ZERO_WIDTH.sub("", text)))


def _decode_blob(blob: str) -> str | None:
    """Printable text a base64 or hex blob decodes to, else None."""
    raw: bytes | None = None
    if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", blob):
        try:
            raw = bytes.fromhex(blob)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c.isspace() for c in decoded)
    return decoded if decoded and printable / len(decoded) > 0.95 else None


def context_column(emb: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
    """``emb`` (float32 ``(n, d)`` unit sentence embeddings; sentence ``i`` belongs to document ``owner[i]``) with
    one more column: each sentence's cosine to the sum of its document's other sentences (0 for a document of one
    sentence). An injected task is off-topic in its host, so its cosine is low."""
    sums = np.zeros((n_docs, emb.shape[1]))
    np.add.at(sums, owner, emb)
    counts = np.bincount(owner, minlength=n_docs)
    rest = sums[owner] - emb
    norm = np.linalg.norm(rest, axis=1)
    cos = np.where((counts[owner] > 1) & (norm > 0), (emb * rest).sum(1) / np.maximum(norm, 1e-9), 0.0)
    return np.c_[emb, cos].astype(np.float32)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EmbeddingClassifier:
    """Logistic regression on a sentence's all-MiniLM-L6-v2 embedding and its cosine to the rest of its document
    (:func:`context_column`), trained by benchmarks/injection_embedding.py ``--save``. Its probability is averaged
    with the n-gram scorer's, and ``meta`` carries the two lines of that mean (``threshold``: report, <= 1% of
    out-of-corpus clean documents; ``alert_threshold``: <= 0.1%) and the digest of the n-gram weights they hold for."""

    def __init__(self, coef: np.ndarray, intercept: float, meta: dict[str, Any]) -> None:
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.meta = meta

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Probability of an injected task per row of ``features`` (``context_column`` output), float64 ``(n,)``."""
        return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ self.coef + self.intercept)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"coef": [round(float(c), 6) for c in self.coef], "intercept": self.intercept,
                                    "meta": self.meta}, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> EmbeddingClassifier:
        data = json.loads(path.read_text())
        return cls(np.array(data["coef"]), data["intercept"], data["meta"])


@lru_cache(maxsize=1)
def default_embedding_classifier() -> EmbeddingClassifier | None:
    """The shipped classifier, or None when its file is missing or it was trained for other n-gram weights (its
    lines are lines of the mean of both probabilities, so they only hold for the weights they were chosen with)."""
    if not EMBEDDING_WEIGHTS.exists() or not WEIGHTS.exists():
        return None
    classifier = EmbeddingClassifier.load(EMBEDDING_WEIGHTS)
    return classifier if classifier.meta.get("ngram_weights_sha256") == file_digest(WEIGHTS) else None


class InjectionDetector(Detector):
    """Rules (VA511-VA517, score 1.0 when matched) as a floor, plus a learned sentence scorer (VA518).

    Rules look at the text after NFKC normalisation with invisible characters removed and Unicode tag characters
    decoded, so split or smuggled phrases still match. VA517's weaker form (a code block handed over to go into
    "your code/solution": ``pat.ADDRESSED_WEAK``) is LOW, with ``evidence["weak_form"]``. VA518 scores every
    sentence with a logistic regression on hashed word/char n-grams, cues of a task addressed to an assistant
    (imperative first word, second person, requests for secrets, split payloads, requests in other languages) and
    how out of place the sentence is in the rest of its document (off-topic, the only task or second-person sentence
    there, in another script or language), and reports the document's highest sentence probability, so one injected
    sentence in a long clean document is not diluted. The weights (v7) carry two lines chosen *out of corpus* on the
    eleven clean dev corpora (each corpus scored by a scorer trained without it; benchmarks/injection_corpora.py):
    ``learned_threshold`` (default: the report line, <= 1% of documents) makes a VA518 finding, LOW; the alert line
    (<= 0.1%, the rule's alert floor) makes it MEDIUM. In a scan (``embedding``, default on) a second opinion joins
    it: a logistic regression on the sentence's all-MiniLM-L6-v2 embedding and its cosine to the rest of its
    document (:class:`EmbeddingClassifier`, benchmarks/injection_embedding.py); VA518 then scores the mean of the
    two probabilities against that mean's own two lines (chosen out of corpus the same way), and only documents
    whose best n-gram probability could still reach the report line are embedded (1-5% of clean documents measured).
    Zero-width characters count as hidden text in a run of 8 or more, or when at least ``zero_width_min`` (default
    1) of them split a word of an alphabet that separates words with spaces (``pass\u200bword``), where they have no
    role but to slip past keyword filters; none of the ~22,000 clean development documents (web pages, Wikipedia
    en/es, news, PubMed, code, e-mails) has one, while stray ones between words or around formulas are left alone.
    Each point is judged on its own text alone (``pointwise_observe``).
    """

    name = "injection"
    version = "9"  # bump with every weights file or evidence change: --incremental carries same-version findings
    description = "Indirect prompt injection: override phrases, role markers, tool calls, exfil links, hidden text"
    rules = (OVERRIDE, ROLE_MARKER, TOOL_CALL, EXFIL_LINK, HIDDEN_TEXT, ENCODED, ADDRESSED, LEARNED)
    budgeted_rules = frozenset({"VA518"})
    requires = frozenset({"text"})
    pointwise_observe = True
    defaults: ClassVar[dict[str, Any]] = {"learned": True, "embedding": True, "learned_threshold": None,
                                          "zero_width_min": 1}
    param_types: ClassVar[dict[str, type]] = {"learned_threshold": float}

    def floors(self) -> dict[str, float]:
        """VA518's alert floor is the line the shipped weights carry (``alert_threshold``, chosen out of corpus:
        the embedding classifier's line of the mean score when ``embedding`` is on, else the n-gram scorer's)
        unless ``alert_floors`` sets one."""
        line = self._lines()[1]
        return {**({LEARNED.id: line} if line is not None else {}), **super().floors()}

    def _lines(self, combined: bool | None = None) -> tuple[float, float | None]:
        """VA518's report and alert lines: of the mean n-gram + embedding probability (``combined``, default: when
        the embedding classifier is on) or of the n-gram probability alone; ``learned_threshold`` overrides the
        report line."""
        classifier = self._classifier() if combined is None or combined else None
        scorer = getattr(self, "_scorer", None) or (default_scorer() if self.params["learned"] else None)
        meta = classifier.meta if classifier else scorer.meta if scorer else {}
        report = self.params["learned_threshold"]
        report = float(report if report is not None else meta.get("threshold", 0.9) if scorer else 1.0)
        alert = meta.get("alert_threshold")
        return report, float(alert) if alert is not None else None

    def _classifier(self) -> EmbeddingClassifier | None:
        on = self.params["learned"] and self.params["embedding"]
        return default_embedding_classifier() if on else None

    def begin(self, ctx: ScanContext) -> None:
        self._scorer: SentenceScorer | None = default_scorer() if self.params["learned"] else None
        if self.params["learned"] and self._scorer is None:
            ctx.note(f"{self.name}: learned scorer weights missing; rules only")
        elif self.params["learned"] and self.params["embedding"] and self._classifier() is None:
            ctx.note(f"{self.name}: embedding classifier missing or trained for other n-gram weights; "
                     "n-gram scorer alone")
        self._encoder: Any = None

        def encode(texts: list[str]) -> np.ndarray:
            # the bundled model whatever the scan's --model: the classifier was trained on its embeddings
            if self._encoder is None:
                from auditor.embedder import Embedder

                self._encoder = Embedder(device=ctx.settings.device, batch_size=ctx.settings.embed_batch_size)
            return np.asarray(self._encoder.encode(texts))

        self._encode: Encode | None = encode

    @property
    def learned_threshold(self) -> float:
        """VA518's report line (see :meth:`_lines`)."""
        return self._lines()[0]

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        texts = batch.texts
        encode = getattr(self, "_encode", None)
        for i, verdicts in enumerate(self.analyse_many([t or "" for t in texts], encode=encode)):
            for rule, score, threshold, evidence in verdicts:
                # an injected sentence may quote a password or an address: evidence carries it masked
                span = evidence["span"] = redact_text(evidence.get("span", ""))
                low = Severity.LOW if "below_alert_floor" in evidence or evidence.get("weak_form") else None
                yield Finding(rule, self.name, batch.ids[i], score, f"{rule.title}: {span!r}", threshold, evidence,
                              batch.tenants[i], severity=low, identity=rule.id)

    def analyse_many(self, texts: list[str], encode: Encode | None = None,
                     ) -> list[list[tuple[Rule, float, float, dict[str, Any]]]]:
        """Per text, ``(rule, score, threshold, evidence)`` for each rule that fires (at most one per rule);
        the learned scorer runs once over all sentences of all ``texts``. With ``encode`` (the scan passes the
        bundled model's) and the embedding classifier on, VA518 scores a sentence by the mean of the n-gram and the
        embedding classifier's probabilities; only documents with a sentence whose n-gram probability could reach
        the report line (>= 2 x line - 1, as the other probability is at most 1) are embedded."""
        results = [self._rules(t) for t in texts]
        if not self._scorer_ready():
            return [list(r.values()) for r in results]
        scorer = self._scorer
        pieces = [sentences(normalise(t)) if t else [] for t in texts]
        probs = scorer.score_documents([[s for _, s in doc] for doc in pieces]) if scorer else np.zeros(0)
        classifier = self._classifier() if encode is not None else None
        threshold, floor = self._lines(combined=classifier is not None)
        floor = super().floors().get(LEARNED.id, floor)  # an ``alert_floors`` parameter wins
        starts = np.cumsum([0] + [len(doc) for doc in pieces])
        other = (self._embedding_scores(pieces, probs, starts, threshold, classifier, encode)
                 if classifier and encode else {})
        for k, (found, doc) in enumerate(zip(results, pieces, strict=True)):
            if not doc:
                continue
            doc_probs = probs[starts[k] : starts[k + 1]]
            scores = (doc_probs + other[k]) / 2 if k in other else doc_probs if classifier is None else None
            if scores is None:
                continue  # the mean cannot reach the line
            best = int(scores.argmax())
            if scores[best] >= threshold:
                offset, sentence = doc[best]
                evidence: dict[str, Any] = {"span": _clip(sentence), "offset": offset, "sentences": len(doc)}
                if k in other:
                    evidence.update(ngram=round(float(doc_probs[best]), 4), embedding=round(float(other[k][best]), 4))
                if floor is not None and scores[best] < floor:
                    evidence["below_alert_floor"] = floor  # the scorer alone under its out-of-sample line
                found[LEARNED.id] = (LEARNED, float(scores[best]), threshold, evidence)
        return [list(r.values()) for r in results]

    @staticmethod
    def _embedding_scores(pieces: list[list[tuple[int, str]]], probs: np.ndarray, starts: np.ndarray,
                          threshold: float, classifier: EmbeddingClassifier, encode: Encode) -> dict[int, np.ndarray]:
        """Per document that has a sentence with n-gram probability >= 2 x ``threshold`` - 1, the embedding
        classifier's probability of each of its sentences (all are embedded: the context is the rest of the
        document)."""
        low = 2 * threshold - 1
        chosen = [k for k, doc in enumerate(pieces) if doc and probs[starts[k] : starts[k + 1]].max() >= low]
        if not chosen:
            return {}
        texts = [s for k in chosen for _, s in pieces[k]]
        owner = np.repeat(np.arange(len(chosen)), [len(pieces[k]) for k in chosen])
        q = classifier.probabilities(context_column(encode(texts), owner, len(chosen)))
        bounds = np.cumsum([0] + [len(pieces[k]) for k in chosen])
        return {k: q[bounds[j] : bounds[j + 1]] for j, k in enumerate(chosen)}

    def analyse(self, text: str) -> list[tuple[Rule, float, float, dict[str, Any]]]:
        """The verdicts of :meth:`analyse_many` for one text."""
        return self.analyse_many([text])[0]

    def _rules(self, text: str) -> dict[str, tuple[Rule, float, float, dict[str, Any]]]:
        found: dict[str, tuple[Rule, float, float, dict[str, Any]]] = {}
        if not text:
            return found

        def hit(rule: Rule, span: str, **extra: Any) -> None:
            if rule.id not in found:
                found[rule.id] = (rule, 1.0, 0.5, {"span": _clip(span), **extra})

        self._hidden(text, hit)
        clean = normalise(text)
        for rule, regex in ((OVERRIDE, pat.OVERRIDE), (ROLE_MARKER, pat.ROLE_MARKER), (TOOL_CALL, pat.TOOL_CALL),
                            (EXFIL_LINK, pat.EXFIL_LINK), (ADDRESSED, pat.ADDRESSED_TASK)):
            m = regex.search(clean)
            if m:
                hit(rule, clean[max(0, m.start() - 20) : m.end() + 40], offset=m.start())
        weak = None if ADDRESSED.id in found else pat.ADDRESSED_WEAK.search(clean)
        if weak:
            hit(ADDRESSED, clean[max(0, weak.start() - 20) : weak.end() + 40], offset=weak.start(), weak_form=True)
        self._encoded(text, hit)
        return found

    def _scorer_ready(self) -> bool:
        if not hasattr(self, "_scorer"):
            self._scorer = default_scorer() if self.params["learned"] else None
        return self._scorer is not None

    def _hidden(self, text: str, hit: Any) -> None:
        tags = pat.TAG_CHARS.search(text)
        if tags:
            hit(HIDDEN_TEXT, "".join(chr(ord(c) - 0xE0000) for c in tags.group()), carrier="unicode-tag-characters")
            return
        bidi = pat.reordering_bidi(text)
        if bidi:
            hit(HIDDEN_TEXT, text[bidi.start() : bidi.start() + 80], carrier="bidi-override",
                codepoint=f"U+{ord(bidi.group()):04X}")
            return
        # Zero-width characters hide text when they split words (evading keyword filters) or encode bits in
        # long runs; a few word joiners around formulas (as Wikipedia's math markup has) are neither.
        in_word = list(ZERO_WIDTH_IN_WORD.finditer(text))
        run = pat.ZERO_WIDTH_RUN.search(text)
        if run or (in_word and len(in_word) >= int(self.params["zero_width_min"])):
            at = (run or in_word[0]).start()
            hit(HIDDEN_TEXT, normalise(text[max(0, at - 20) :][:120]), carrier="zero-width-characters",
                count=len(pat.ZERO_WIDTH.findall(text)), split_words=len(in_word))
            return
        for m in pat.HTML_COMMENT.finditer(text):
            if pat.INSTRUCTION_WORDS.search(m.group(1)):
                hit(HIDDEN_TEXT, m.group(1).strip(), carrier="html-comment")
                return
        for m in pat.CSS_HIDDEN.finditer(text):
            if m.group(2).strip():
                hit(HIDDEN_TEXT, m.group(2).strip(), carrier="css-hidden")
                return

    @staticmethod
    def _encoded(text: str, hit: Any) -> None:
        for regex, kind in ((pat.HEX_BLOB, "hex"), (pat.BASE64_BLOB, "base64")):
            for m in regex.finditer(text):
                decoded = _decode_blob(m.group())
                if decoded and pat.INSTRUCTION_WORDS.search(decoded) and len(decoded.split()) >= 3:
                    hit(ENCODED, decoded, encoding=kind, offset=m.start())
                    return
