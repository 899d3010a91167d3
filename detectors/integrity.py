"""Integrity faults of stored points: broken vectors, foreign-model norms, copied vectors, conflicting
document ids, and payloads missing the configured fields."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import ATLAS_POISON_TRAINING, OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.types import MISSING, Confidence, RecordBatch, Severity

_TAGS = (OWASP_VECTOR_WEAKNESS,)
NON_FINITE = Rule("VA101", "Vector has NaN or infinite components", Severity.HIGH, Confidence.HIGH, _TAGS)
ZERO = Rule("VA102", "Zero vector", Severity.HIGH, Confidence.HIGH, _TAGS)
WRONG_DIM = Rule("VA103", "Vector missing or of the wrong dimension", Severity.HIGH, Confidence.HIGH, _TAGS)
NORM_OUTLIER = Rule(
    "VA104",
    "Vector norm far from the collection's norms (another model?)",
    Severity.MEDIUM,
    Confidence.MEDIUM,
    (*_TAGS, OWASP_DATA_POISONING, ATLAS_POISON_TRAINING),
)
DUPLICATE_VECTOR = Rule(
    "VA105",
    "Identical vector stored under several ids",
    Severity.MEDIUM,
    Confidence.MEDIUM,
    (*_TAGS, OWASP_DATA_POISONING),
)
DOC_ID_CONFLICT = Rule(
    "VA106",
    "One document id under several points with different text",
    Severity.MEDIUM,
    Confidence.MEDIUM,
    (*_TAGS, OWASP_DATA_POISONING),
)
MISSING_TEXT = Rule("VA107", "Payload lacks the configured text field", Severity.MEDIUM, Confidence.HIGH, _TAGS)
MISSING_TENANT = Rule("VA108", "Payload lacks the configured tenant field", Severity.HIGH, Confidence.HIGH, _TAGS)
BAD_TEXT = Rule("VA109", "Text is empty or not a string", Severity.LOW, Confidence.HIGH, _TAGS)


class IntegrityDetector(Detector):
    """Per-point structural checks (pass 1) plus collection-level norm, duplicate and doc-id checks (pass 2).

    Norm score: robust z of log-norm, ``|log n - median| / max(1.4826 * MAD, min_scale)``; flagged at
    ``norm_z`` (default 6: under a normal model that is ~1e-9 of clean points, so the budget is spent on
    mixed-model data only; ``min_scale`` 0.02 keeps collections of unit vectors from flagging rounding noise).
    """

    name = "integrity"
    version = "1"
    description = (
        "NaN/Inf, zero, wrong-dimension and foreign-norm vectors; copied vectors; doc-id conflicts; payload fields"
    )
    rules = (
        NON_FINITE,
        ZERO,
        WRONG_DIM,
        NORM_OUTLIER,
        DUPLICATE_VECTOR,
        DOC_ID_CONFLICT,
        MISSING_TEXT,
        MISSING_TENANT,
        BAD_TEXT,
    )
    requires = frozenset({"vectors"})
    defaults: ClassVar[dict[str, Any]] = {"norm_z": 6.0, "min_scale": 0.02, "max_group_evidence": 20}

    def begin(self, ctx: ScanContext) -> None:
        self._norms: list[np.ndarray] = []

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        dim = ctx.info.dim
        vec = batch.vectors
        dim_ok: np.ndarray = np.asarray(batch.dim_ok)
        finite = np.asarray(np.isfinite(vec).all(axis=1))
        zero: np.ndarray = np.abs(np.nan_to_num(vec)).sum(axis=1) == 0
        norms = np.where(dim_ok & finite & ~zero, np.linalg.norm(np.nan_to_num(vec), axis=1), np.nan)
        self._norms.append(norms.astype(np.float64))
        fm = ctx.field_map
        for i, pid in enumerate(batch.ids):
            tenant = batch.tenants[i]
            if not dim_ok[i]:
                stored = int(batch.stored_dims[i])
                msg = "point has no vector" if stored == 0 else f"vector has {stored} dimensions, collection has {dim}"
                yield Finding(WRONG_DIM, self.name, pid, 1.0, msg, 0.5, {"stored_dim": stored, "dim": dim}, tenant)
            elif not finite[i]:
                nan = int(np.isnan(vec[i]).sum())
                inf = int(np.isinf(vec[i]).sum())
                yield Finding(
                    NON_FINITE,
                    self.name,
                    pid,
                    1.0,
                    f"vector has {nan} NaN and {inf} infinite components",
                    0.5,
                    {"nan": nan, "inf": inf},
                    tenant,
                )
            elif zero[i]:
                yield Finding(ZERO, self.name, pid, 1.0, "vector is all zeros", 0.5, {}, tenant)
            if fm.text:
                value = batch.text_values[i]
                if value is MISSING:
                    yield Finding(
                        MISSING_TEXT,
                        self.name,
                        pid,
                        1.0,
                        f"payload has no {fm.text!r} field",
                        0.5,
                        {"field": fm.text, "payload_keys": sorted(batch.payloads[i])[:20]},
                        tenant,
                    )
                elif not isinstance(value, str) or not value.strip():
                    kind = type(value).__name__ if not isinstance(value, str) else "empty string"
                    yield Finding(
                        BAD_TEXT,
                        self.name,
                        pid,
                        1.0,
                        f"text field {fm.text!r} is {kind}",
                        0.5,
                        {"field": fm.text, "type": kind},
                        tenant,
                    )
            if fm.tenant and batch.tenant_values[i] is MISSING:
                yield Finding(
                    MISSING_TENANT,
                    self.name,
                    pid,
                    1.0,
                    f"payload has no {fm.tenant!r} field",
                    0.5,
                    {"field": fm.tenant, "payload_keys": sorted(batch.payloads[i])[:20]},
                    None,
                )

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        yield from self._norm_outliers(ctx)
        max_ev = int(self.params["max_group_evidence"])
        # identical vectors under different ids (broken vectors are reported above, not here)
        valid = ctx.valid_mask()
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i, h in enumerate(table.vector_hashes):
            if valid[i]:
                by_hash[h].append(i)
        for rows in by_hash.values():
            if len(rows) < 2:
                continue
            distinct_texts = {table.text_hashes[r] for r in rows}
            same_text = len(distinct_texts) == 1
            members = [table.ids[r] for r in rows]
            for r in rows:
                others = [m for m in members if m != table.ids[r]]
                yield Finding(
                    DUPLICATE_VECTOR,
                    self.name,
                    table.ids[r],
                    float(len(rows)),
                    f"vector identical to {len(others)} other point(s)" + ("" if same_text else " whose text differs"),
                    2.0,
                    {"group_size": len(rows), "others": others[:max_ev], "same_text": same_text},
                    table.tenants[r],
                    severity=Severity.INFO if same_text else None,
                )
        # one document id, several points, different texts
        if ctx.field_map.doc_id:
            by_doc: dict[str, list[int]] = defaultdict(list)
            for i, d in enumerate(table.doc_ids):
                if d is not None:
                    by_doc[str(d)].append(i)
            for doc, rows in by_doc.items():
                texts = {table.text_hashes[r] for r in rows}
                if len(rows) < 2 or len(texts) < 2:
                    continue
                members = [table.ids[r] for r in rows]
                for r in rows:
                    yield Finding(
                        DOC_ID_CONFLICT,
                        self.name,
                        table.ids[r],
                        float(len(texts)),
                        f"doc id {doc!r} is stored under {len(rows)} points with {len(texts)} different texts",
                        1.0,
                        {"doc_id": doc, "points": members[:max_ev], "distinct_texts": len(texts)},
                        table.tenants[r],
                    )

    def _norm_outliers(self, ctx: ScanContext) -> Iterable[Finding]:
        norms = np.concatenate(self._norms) if self._norms else np.zeros(0)
        ok = np.isfinite(norms) & (norms > 0)
        if ok.sum() < 10:
            return
        logs = np.log(norms[ok])
        median = float(np.median(logs))
        mad = float(np.median(np.abs(logs - median)))
        scale = max(1.4826 * mad, float(self.params["min_scale"]))
        z = np.full(len(norms), 0.0)
        z[ok] = np.abs(logs - median) / scale
        limit = float(self.params["norm_z"])
        typical = float(np.exp(median))
        for row in np.flatnonzero(z >= limit):
            yield Finding(
                NORM_OUTLIER,
                self.name,
                ctx.table.ids[row],
                float(z[row]),
                f"norm {norms[row]:.4g} is {z[row]:.1f} robust deviations from the collection's {typical:.4g}",
                limit,
                {"norm": float(norms[row]), "median_norm": typical, "robust_z": float(z[row])},
                ctx.table.tenants[row],
            )
