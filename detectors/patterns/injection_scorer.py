"""Learned sentence scorer for injected tasks: hashed word and character n-grams with logistic-regression weights
(trained by benchmarks/train_injection_scorer.py on MIT-licensed data, shipped as injection_scorer.json)."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

WEIGHTS = Path(__file__).with_name("injection_scorer.json")
N_FEATURES = 2**18
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+|\|")
MAX_SENTENCE = 400


def sentences(text: str) -> list[tuple[int, str]]:
    """``(offset, sentence)`` pieces of ``text`` of three words or more: split at sentence ends, newlines and
    ``|`` field breaks; long pieces are cut into ``MAX_SENTENCE``-character windows."""
    out: list[tuple[int, str]] = []
    pos = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        piece = text[pos:end]
        stripped = piece.strip()
        # Under three words ("Any questions?") there is too little to tell an injected task from a reply.
        if len(stripped) >= 8 and len(stripped.split()) >= 3:
            base = pos + piece.index(stripped[0])
            for k in range(0, len(stripped), MAX_SENTENCE):
                out.append((base + k, stripped[k : k + MAX_SENTENCE]))
        if m:
            pos = m.end()
    return out


def vectorizers() -> tuple[Any, Any]:
    """The two stateless feature hashers (word 1-2 grams, char_wb 3-5 grams); same for training and scoring."""
    from sklearn.feature_extraction.text import HashingVectorizer

    words = HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2",
                              token_pattern=r"(?u)\b\w+\b|[?!:\"']")
    chars = HashingVectorizer(n_features=N_FEATURES, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False,
                              norm="l2")
    return words, chars


def featurize(texts: list[str]) -> Any:
    """Sparse ``(n, 2 * N_FEATURES)`` features of ``texts``."""
    from scipy.sparse import hstack

    words, chars = vectorizers()
    return hstack([words.transform(texts), chars.transform(texts)]).tocsr()


class SentenceScorer:
    """Probability that a sentence is an injected instruction (higher = more suspicious)."""

    def __init__(self, coef: npt.NDArray[np.float64], intercept: float, meta: dict[str, Any]) -> None:
        self.coef = coef
        self.intercept = intercept
        self.meta = meta

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> SentenceScorer:
        data = json.loads(path.read_text(encoding="utf-8"))
        coef = np.zeros(2 * N_FEATURES, dtype=np.float64)
        coef[np.asarray(data["index"], dtype=np.int64)] = np.asarray(data["coef"], dtype=np.float64)
        return cls(coef, float(data["intercept"]), data.get("meta", {}))

    def save(self, path: Path, top: int = 40_000) -> None:
        keep = np.argsort(-np.abs(self.coef))[:top]
        keep = np.sort(keep[self.coef[keep] != 0])
        path.write_text(json.dumps({
            "intercept": round(self.intercept, 5), "meta": self.meta,
            "index": keep.tolist(), "coef": [round(float(c), 4) for c in self.coef[keep]],
        }, separators=(",", ":")), encoding="utf-8")

    def score(self, texts: list[str]) -> npt.NDArray[np.float64]:
        if not texts:
            return np.zeros(0)
        logits = featurize(texts) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


@lru_cache(maxsize=1)
def default_scorer() -> SentenceScorer | None:
    """The shipped scorer, or None when its weights file is absent (the rules still run)."""
    return SentenceScorer.load() if WEIGHTS.exists() else None
