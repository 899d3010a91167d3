"""Shared loading for the content benchmarks: dev corpora split by a stable id hash, injection strings, and
planting of an injection at the start, middle or end of a clean document."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"
CORPORA = {
    "email": "bipia_email_contexts.jsonl", "code": "bipia_code_contexts.jsonl",
    "wiki": "wikipedia_vital_en_even.jsonl", "wiki_es": "wikipedia_vital_es.jsonl",
    "pubmed": "pubmedqa_abstracts.jsonl", "hotpotqa": "piarena_hotpotqa_retrieved_passages.jsonl",
}
INJECTIONS = ("bipia_text_attacks.jsonl", "bipia_code_attacks.jsonl", "cyberseceval_prompt_injection.jsonl")
#: Clean documents that merely talk about prompts, passwords or instructions (hard negatives).
TOPICAL = re.compile(r"(?i)\b(?:prompts?|passwords?|instructions?|ignore|system|assistant|chatbot)\b")


def load(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bucket_of(key: str) -> int:
    """One of five stable buckets by id hash (the cross-fitting folds of benchmarks/train_injection_scorer.py)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 5


def split_of(key: str) -> str:
    """Stable split by id hash: 20% ``test`` (benchmark only), 20% ``calib`` (thresholds), 60% ``train``."""
    bucket = bucket_of(key)
    return "test" if bucket == 0 else "calib" if bucket == 1 else "train"


def clean_docs(data: Path) -> list[dict[str, Any]]:
    """Every clean corpus document with ``corpus`` and ``split`` added."""
    out = []
    for corpus, name in CORPORA.items():
        for row in load(data / "corpora" / name):
            if isinstance(row.get("text"), str) and row["text"].strip():
                key = f"{corpus}:{row['id']}"
                out.append({**row, "corpus": corpus, "split": split_of(key), "bucket": bucket_of(key)})
    return out


def injection_strings(data: Path) -> list[dict[str, Any]]:
    """Every dev injection string with a ``family`` (dataset and category) for leave-family-out checks."""
    out = []
    for name in INJECTIONS:
        for row in load(data / "injection" / name):
            family = row.get("category") or row.get("injection_variant") or "other"
            out.append({"id": row["id"], "text": row["text"], "family": f"{name.split('_')[0]}:{family}"})
    return out


def plant(host: str, injection: str, where: str) -> str:
    """``injection`` inserted at the ``start``, ``middle`` (nearest sentence break) or ``end`` of ``host``."""
    if where == "start":
        return f"{injection}\n{host}"
    if where == "end":
        return f"{host}\n{injection}"
    middle = len(host) // 2
    breaks = [m.end() for m in re.finditer(r"[.!?]\s+|\n", host)]
    cut = min(breaks, key=lambda b: abs(b - middle)) if breaks else middle
    return f"{host[:cut]} {injection} {host[cut:]}"
