"""The Finding record and its identity: stable across scans unless the point itself changes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from auditor.types import Confidence, PointId, Severity

# Framework tags used by the built-in rules.
OWASP_VECTOR_WEAKNESS = "OWASP-LLM08:2025 Vector and Embedding Weaknesses"
OWASP_DATA_POISONING = "OWASP-LLM04:2025 Data and Model Poisoning"
OWASP_PROMPT_INJECTION = "OWASP-LLM01:2025 Prompt Injection"
OWASP_SENSITIVE_INFO = "OWASP-LLM02:2025 Sensitive Information Disclosure"
ATLAS_POISON_TRAINING = "MITRE-ATLAS AML.T0020 Poison Training Data"
ATLAS_RAG_POISONING = "MITRE-ATLAS AML.T0070 RAG Poisoning"
ATLAS_PROMPT_INJECTION_INDIRECT = "MITRE-ATLAS AML.T0051.001 LLM Prompt Injection: Indirect"
ATLAS_FALSE_RAG_ENTRY = "MITRE-ATLAS AML.T0071 False RAG Entry Injection"


@dataclass(frozen=True)
class Rule:
    """A stable rule id with its title, default severity, confidence and framework tags."""

    id: str
    title: str
    severity: Severity
    confidence: Confidence = Confidence.MEDIUM
    tags: tuple[str, ...] = ()


@dataclass
class Finding:
    """One detector verdict about one point (or the whole collection when ``point_id`` is None).

    ``score`` follows the contract higher = more suspicious; ``threshold`` is the value it was compared
    with. ``identity`` distinguishes several findings of one rule on one point (e.g. two secrets);
    ``evidence`` must never carry a raw secret.
    """

    rule: Rule
    detector: str
    point_id: PointId | None
    score: float
    message: str
    threshold: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    tenant: str | None = None
    severity: Severity | None = None
    confidence: Confidence | None = None
    identity: str = ""

    @property
    def rule_id(self) -> str:
        return self.rule.id

    @property
    def effective_severity(self) -> Severity:
        return self.severity or self.rule.severity

    @property
    def effective_confidence(self) -> Confidence:
        return self.confidence or self.rule.confidence

    @property
    def tags(self) -> tuple[str, ...]:
        return self.rule.tags

    def fingerprint(self, collection_key: str, point_version: str | None) -> str:
        """Identity hash: collection, rule, point, the point's content version and ``identity``.

        Score, threshold, evidence and scan are left out on purpose so a reviewed finding keeps its
        status in later scans; ``point_version`` (vector + text hash) makes a changed point a new finding.
        """
        key = json.dumps(
            [collection_key, self.rule.id, _point_key(self.point_id), point_version or "", self.identity],
            separators=(",", ":"),
        )
        return hashlib.sha256(key.encode()).hexdigest()[:32]


def _point_key(point_id: PointId | None) -> str:
    return "" if point_id is None else point_key(point_id)


def point_key(point_id: PointId) -> str:
    """Canonical string for a point id that keeps int 7 and str "7" apart (JSON encoding)."""
    if type(point_id) is int:  # json.dumps of an int is its decimal digits; str() is ~10x quicker (millions a scan)
        return str(point_id)
    return json.dumps(point_id)


def parse_point_id(text: str) -> list[PointId]:
    """Candidate ids for a point id typed by a user: the int form (if numeric) and the string form."""
    candidates: list[PointId] = []
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        candidates.append(int(stripped))
    candidates.append(stripped)
    return candidates
