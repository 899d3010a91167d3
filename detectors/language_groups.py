"""Collective language anomalies: a group of documents written in a language or script that the rest of the
collection (or of their tenant) does not use — a foreign-language topic cluster planted to be retrieved for
questions asked in that language, or a batch of another language's pages filed in the wrong place. Reported once
per group."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import ATLAS_RAG_POISONING, OWASP_DATA_POISONING, Finding, Rule
from auditor.types import Confidence, Severity

FOREIGN_GROUP = Rule(
    "VA341", "A group of documents in a language or script the rest of the collection does not use",
    Severity.MEDIUM, Confidence.MEDIUM, (OWASP_DATA_POISONING, ATLAS_RAG_POISONING),
)

_LETTERS = re.compile(r"[^\W\d_]+")
#: Score added when most of a group arrived together since the last scan: over the rule's alert floor.
NEW_GROUP_BONUS = 1.0
#: Documents of the rest of a reference read for its typical share of common words (an evenly spaced sample).
_TYPICAL_SAMPLE = 2000
#: Letters read per document for its script (enough to tell Latin from Cyrillic, Arabic, Han, ...).
_SCRIPT_SAMPLE = 2000


def letter_words(text: str | None) -> list[str]:
    """Case-folded runs of letters (no digits, no punctuation), any alphabet."""
    return _LETTERS.findall((text or "").casefold())


def dominant_script(text: str | None) -> str | None:
    """The Unicode script most of the text's letters belong to (first word of their Unicode name: LATIN,
    CYRILLIC, ARABIC, CJK, HANGUL, ...), None without letters."""
    counts: Counter[str] = Counter()
    for ch in (text or "")[:_SCRIPT_SAMPLE]:
        if ch.isalpha():
            counts[unicodedata.name(ch, "UNKNOWN").split(" ")[0]] += 1
    return counts.most_common(1)[0][0] if counts else None


class LanguageGroupDetector(Detector):
    """A group of documents whose most-used words are not the collection's: the words a language uses most
    (articles, prepositions, conjunctions) are what sets it apart, and every reference — the tenant when a tenant
    field is set and the tenant has >= ``min_reference`` documents, else the collection — defines its own: its
    ``vocab_size`` (100) *common words*, those found in the most of its documents, whatever the language. No
    language list, no model download: an English, a Spanish or a code collection each say what their language is.

    1. A document of >= ``min_words`` words is a *candidate* when at most ``candidate_overlap`` (half) of its own
       ``signature_words`` (10) most frequent words are common words of its reference, or when its script (LATIN,
       CYRILLIC, ARABIC, CJK, ...) is used by at most ``max_share`` (10%) of the reference.
    2. Candidates joined by a neighbour-graph edge that also share their language — the same rare script, or
       signatures with Jaccard >= ``signature_jaccard`` (0.2) — form groups (sentence embeddings of one language
       sit together).
    3. A group of >= ``min_group`` (5) documents and at most ``max_share`` of its reference is reported, once, on
       its first member with every member in evidence, when the share of its running words (pooled) that are
       common words of the rest of the reference is at most ``max_share_ratio`` (half) of the rest's median
       document share — a language's common words are most of its running text, whatever a small group's topic
       words (an English topic cluster stays near the median, a Spanish one in an English store falls to about a
       twentieth) — or when its script is rare there.

    Severity follows provenance: MEDIUM and over the alert floor when at least ``wave_share`` (80%) of the members
    are new or changed since the last scan (a batch that arrived together); otherwise INFO (a multilingual
    collection has such groups honestly: listed, not flagged; ``review_budget`` > 0 keeps that share of the
    points' strongest groups as LOW for review). Score: 1 - that share
    ratio, plus 1 for a wave."""

    name = "language-group"
    version = "2"
    description = "a group of documents in a language or script the rest of the collection does not use"
    rules = (FOREIGN_GROUP,)
    budgeted_rules = frozenset({"VA341"})
    alert_floors: ClassVar[dict[str, float]] = {"VA341": NEW_GROUP_BONUS}
    requires = frozenset({"vectors", "text", "graph"})
    defaults: ClassVar[dict[str, Any]] = {
        "review_budget": 0.0, "k": 10, "vocab_size": 100, "min_words": 20, "signature_words": 10,
        "candidate_overlap": 0.5, "signature_jaccard": 0.2, "group_vocab": 20, "max_share_ratio": 0.5, "min_group": 5,
        "max_share": 0.1, "min_reference": 50, "wave_share": 0.8, "max_evidence": 50,
    }

    def neighbours_needed(self) -> int:
        return int(self.params["k"])

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        valid = ctx.valid_mask()
        min_words = int(self.params["min_words"])
        words = [letter_words(t) if ok else [] for t, ok in zip(table.texts, valid, strict=True)]
        refs = [_Reference(name, [r for r in rows if len(words[r]) >= min_words])
                for name, rows in self._references(ctx)]
        refs = [ref for ref in refs if len(ref.rows) >= 2 * int(self.params["min_group"])]
        if not refs:
            return
        k = int(self.params["k"])
        graph = ctx.graph(k).truncated(k)
        arrived = ctx.new_or_changed()
        for ref in refs:
            self._learn(ref, words, table.texts)
            for members in self._groups(ref, graph.indices):
                finding = self._judge_group(ctx, ref, members, words, arrived)
                if finding is not None:
                    yield finding

    def _references(self, ctx: ScanContext) -> list[tuple[str, list[int]]]:
        """The row sets each document is judged against: its tenant when large enough, else the collection."""
        valid = ctx.valid_mask()
        rows_all = [int(r) for r in np.flatnonzero(valid)]
        if not ctx.field_map.tenant:
            return [("collection", rows_all)]
        out, rest = [], []
        for tenant, rows in ctx.rows_by_tenant().items():
            mine = [r for r in rows if valid[r]]
            if tenant is not None and len(mine) >= int(self.params["min_reference"]):
                out.append((f"tenant {tenant}", mine))
            else:
                rest += mine
        if rest:
            out.append(("collection", rest if out else rows_all))
        return out

    def _learn(self, ref: _Reference, words: list[list[str]], texts: list[str | None]) -> None:
        df: Counter[str] = Counter()
        for r in ref.rows:
            df.update(set(words[r]))
        ref.df = df
        common = {w for w, _ in df.most_common(int(self.params["vocab_size"]))}
        n_sig = int(self.params["signature_words"])
        scripts = {r: dominant_script(texts[r]) for r in ref.rows}
        used = Counter(scripts.values())
        limit = float(self.params["max_share"]) * len(ref.rows)
        ref.rare_scripts = {s for s, c in used.items() if c <= limit}
        for r in ref.rows:
            signature = [w for w, _ in Counter(words[r]).most_common(n_sig)]
            overlap = sum(w in common for w in signature) / max(1, len(signature))
            if overlap <= float(self.params["candidate_overlap"]) or scripts[r] in ref.rare_scripts:
                ref.candidates[r] = (frozenset(signature), scripts[r])

    def _groups(self, ref: _Reference, neighbours: np.ndarray) -> list[list[int]]:
        """Connected candidates that share their language (rare script, or signature Jaccard)."""
        cand = ref.candidates
        limit = float(self.params["signature_jaccard"])
        src, dst = [], []
        for r, (sig, script) in cand.items():
            for j in neighbours[r].tolist():
                other = cand.get(j)
                if other is None or j == r:
                    continue
                same_script = script is not None and script == other[1] and script in ref.rare_scripts
                union = len(sig | other[0])
                if same_script or (union and len(sig & other[0]) / union >= limit):
                    src.append(r)
                    dst.append(j)
        if not src:
            return []
        n = int(neighbours.shape[0])
        _, labels = connected_components(coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)), directed=False)
        groups: dict[int, list[int]] = {}
        for r in sorted(cand):
            groups.setdefault(int(labels[r]), []).append(r)
        lo, hi = int(self.params["min_group"]), float(self.params["max_share"]) * len(ref.rows)
        return [g for g in groups.values() if lo <= len(g) <= hi]

    def _judge_group(
        self, ctx: ScanContext, ref: _Reference, members: list[int], words: list[list[str]],
        arrived: list[bool] | None,
    ) -> Finding | None:
        table = ctx.table
        inside: Counter[str] = Counter()
        for m in members:
            inside.update(set(words[m]))
        rest = ref.df - inside  # the reference's document frequencies without the group
        common = {w for w, _ in rest.most_common(int(self.params["vocab_size"]))}
        own = [w for w, _ in inside.most_common(int(self.params["group_vocab"]))]
        # token share, pooled over the group: a language's common words are most of its running text (Zipf),
        # whatever a small group's topic words; the group's share against the rest's median document
        tokens = [w for m in members for w in words[m]]
        pooled = sum(w in common for w in tokens) / max(1, len(tokens))
        inside_rows = set(members)
        others = [r for r in ref.rows if r not in inside_rows][:: max(1, len(ref.rows) // _TYPICAL_SAMPLE)]
        typical = float(np.median([sum(w in common for w in words[r]) / len(words[r]) for r in others]))
        ratio = pooled / max(typical, 1e-9)
        script = Counter(ref.candidates[m][1] for m in members).most_common(1)[0][0]
        if ratio > float(self.params["max_share_ratio"]) and script not in ref.rare_scripts:
            return None
        new = sum(arrived[m] for m in members) if arrived is not None else 0
        wave = arrived is not None and new >= float(self.params["wave_share"]) * len(members)
        show = int(self.params["max_evidence"])
        evidence: dict[str, Any] = {
            "members": [table.ids[m] for m in members][:show], "size": len(members), "reference": ref.name,
            "script": script, "group_words": own[:8], "common_word_share": round(ratio, 3),
            "new_since_last_scan": new if arrived is not None else None,
        }
        return Finding(
            FOREIGN_GROUP, self.name, table.ids[members[0]],
            max(0.0, 1.0 - ratio) + (NEW_GROUP_BONUS if wave else 0.0),
            f"{len(members)} documents ({script} script) whose most-used words ({', '.join(own[:5])}) are not those "
            f"of {ref.name} ({ratio:.0%} of its usual share of common words); "
            + ("arrived together since the last scan" if wave else "a group in another language or format"),
            1.0 - float(self.params["max_share_ratio"]), evidence, table.tenants[members[0]],
            severity=None if wave else Severity.LOW,
        )


class _Reference:
    """The documents a group is judged against, their word document frequencies, rare scripts and candidates."""

    def __init__(self, name: str, rows: list[int]) -> None:
        self.name = name
        self.rows = rows
        self.df: Counter[str] = Counter()
        self.rare_scripts: set[str | None] = set()
        self.candidates: dict[int, tuple[frozenset[str], str | None]] = {}
