"""Content hashes for provenance: stable across stores and runs, cheap on a million points."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def vector_hash(vector: np.ndarray | None) -> str:
    """SHA-256 (truncated) of the float32 little-endian bytes of a vector; ``"none"`` for a missing one."""
    if vector is None:
        return "none"
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()[:32]


def payload_hash(payload: Any) -> str:
    """SHA-256 (truncated) of the canonical JSON of a payload (sorted keys, no whitespace)."""
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def text_hash(text: Any) -> str | None:
    """SHA-256 (truncated) of a text value; None when the point has no string text."""
    if not isinstance(text, str):
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def point_version(vector_h: str, text_h: str | None) -> str:
    """The content version a finding's identity is tied to: vector and text together."""
    return f"{vector_h}:{text_h or '-'}"
