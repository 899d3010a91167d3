"""Changes since the last completed scan: a vector that changed while its text did not (tampering) and a
text that changed while its vector did not (stale embedding)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import (
    ATLAS_POISON_TRAINING,
    ATLAS_RAG_POISONING,
    OWASP_DATA_POISONING,
    OWASP_VECTOR_WEAKNESS,
    Finding,
    Rule,
    point_key,
)
from auditor.hashing import DUPLICATE_STATE
from auditor.types import Confidence, Severity
from detectors.integrity import duplicate_ids

VECTOR_CHANGED = Rule(
    "VA201",
    "Vector changed while its text did not (tampering)",
    Severity.HIGH,
    Confidence.HIGH,
    (OWASP_VECTOR_WEAKNESS, OWASP_DATA_POISONING, ATLAS_RAG_POISONING, ATLAS_POISON_TRAINING),
)
TEXT_CHANGED = Rule(
    "VA202",
    "Text changed while its vector did not (stale embedding)",
    Severity.MEDIUM,
    Confidence.HIGH,
    (OWASP_VECTOR_WEAKNESS,),
)


class ProvenanceDetector(Detector):
    """Compares each point's vector and text hashes with the ledger's last recorded fingerprint.

    The first scan of a collection is a baseline and reports nothing here; new and deleted points are
    counted in the scan summary rather than flagged one by one. Score is 1.0 (a hash either matches or not).
    Runs in pass 2, when the whole collection is known: an id stored more than once now, or last time (its
    recorded state folds all copies, see ``auditor.hashing.point_states``), has no single state to compare
    with; it is left out here and reported once by integrity (VA111).
    """

    name = "provenance"
    version = "2"
    description = "vector changed with unchanged text (tampering), text changed with unchanged vector (stale)"
    rules = (VECTOR_CHANGED, TEXT_CHANGED)
    requires = frozenset({"vectors", "text"})
    defaults: ClassVar[dict[str, Any]] = {}

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        previous = ctx.previous
        if not previous:
            return
        table = ctx.table
        duplicated = duplicate_ids(ctx)
        for i, pid in enumerate(table.ids):
            key = point_key(pid)
            old = previous.get(key)
            if old is None or key in duplicated or old.vector_hash.startswith(DUPLICATE_STATE):
                continue
            vh, th = table.vector_hashes[i], table.text_hashes[i]
            evidence = {
                "old_vector_hash": old.vector_hash,
                "new_vector_hash": vh,
                "old_text_hash": old.text_hash,
                "new_text_hash": th,
                "first_seen_scan": old.first_scan_id,
            }
            tenant = table.tenants[i]
            if vh != old.vector_hash and th == old.text_hash and th is not None:
                yield Finding(
                    VECTOR_CHANGED,
                    self.name,
                    pid,
                    1.0,
                    "stored vector changed since the last scan but the text is identical",
                    0.5,
                    evidence,
                    tenant,
                )
            elif th != old.text_hash and vh == old.vector_hash and th is not None:
                yield Finding(
                    TEXT_CHANGED,
                    self.name,
                    pid,
                    1.0,
                    "text changed since the last scan but the vector was not re-embedded",
                    0.5,
                    evidence,
                    tenant,
                )
