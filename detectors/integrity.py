"""Integrity faults of stored points: broken vectors, foreign-model norms, copied vectors, conflicting
document ids, duplicate and odd point ids, text no encoder accepts, and payloads missing the configured fields."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from auditor.context import ScanContext
from auditor.detector import Detector
from auditor.findings import ATLAS_POISON_TRAINING, OWASP_DATA_POISONING, OWASP_VECTOR_WEAKNESS, Finding, Rule
from auditor.hashing import duplicate_id_rows
from auditor.masking import redact_text
from auditor.textsafety import ID_TYPE, TEXT, TOO_DEEP, PointRepairs, Repair
from auditor.types import MISSING, Confidence, PointId, RecordBatch, Severity
from detectors.textsignals import VERSION_CONTAINMENT, containment, content_words

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
# MEDIUM: text that no UTF-8 encoder accepts is never written by a well-behaved ingestion pipeline, and it
# crashes or is silently dropped by the tools that read it downstream (once, this scanner too): a cheap way to
# hide content from an audit or a filter. The point is still scanned, with the characters escaped. A payload
# nested too deep for Python to walk (hundreds of levels) is the same trick and reported under the same rule.
UNSAFE_TEXT = Rule(
    "VA110",
    "Text holds characters no UTF-8 encoder accepts (lone surrogates, NUL)",
    Severity.MEDIUM,
    Confidence.HIGH,
    (*_TAGS, OWASP_DATA_POISONING),
)
DUPLICATE_ID = Rule(
    "VA111", "One point id stored more than once", Severity.MEDIUM, Confidence.HIGH, (*_TAGS, OWASP_DATA_POISONING)
)
ODD_ID = Rule(
    "VA112", "Point id is neither an integer nor a string, or too long to record", Severity.LOW, Confidence.HIGH, _TAGS
)


class IntegrityDetector(Detector):
    """Per-point structural checks (pass 1) plus collection-level norm, duplicate and doc-id checks (pass 2).

    Norm score: robust z of log-norm, ``|log n - median| / max(1.4826 * MAD, min_scale)``; flagged at
    ``norm_z`` (default 6: under a normal model that is ~1e-9 of clean points, so the budget is spent on
    mixed-model data only; ``min_scale`` 0.02 keeps collections of unit vectors from flagging rounding noise).
    VA105 (identical vector under several ids) is INFO when the texts are equal or versions of one text (each
    shares >= ``version_containment`` of the other's content words: a story re-sent with a changed tail beyond the
    model's input window embeds to the very same vector); otherwise MEDIUM.
    """

    name = "integrity"
    version = "3"
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
        UNSAFE_TEXT,
        DUPLICATE_ID,
        ODD_ID,
    )
    requires = frozenset({"vectors"})
    defaults: ClassVar[dict[str, Any]] = {
        "norm_z": 6.0,
        "min_scale": 0.02,
        "max_group_evidence": 20,
        "missing_field_share": 0.95,
        "version_containment": VERSION_CONTAINMENT,
    }

    def begin(self, ctx: ScanContext) -> None:
        self._norms: list[np.ndarray] = []
        self._points = 0
        #: (point id, tenant, payload keys) of each point without the text / tenant field; key tuples shared
        self._missing_text: list[tuple[PointId, str | None, tuple[str, ...]]] = []
        self._missing_tenant: list[tuple[PointId, str | None, tuple[str, ...]]] = []
        self._key_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def observe(self, batch: RecordBatch, ctx: ScanContext) -> Iterable[Finding]:
        self._points += len(batch)
        dim = ctx.info.dim
        vec = batch.vectors
        dim_ok: np.ndarray = np.asarray(batch.dim_ok)
        finite = np.asarray(np.isfinite(vec).all(axis=1))
        with np.errstate(over="ignore", invalid="ignore"):  # rows with inf/NaN are reported, not measured
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
            repairs = batch.repairs_of(i)
            if repairs:
                yield from self._repair_findings(pid, repairs, tenant)
            if fm.text:
                value = batch.text_values[i]
                if value is MISSING:  # reported in finish: once per point, or once for the collection
                    keys = tuple(sorted(batch.payloads[i])[:20])
                    self._missing_text.append((pid, tenant, self._key_sets.setdefault(keys, keys)))
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
            if fm.tenant and batch.tenant_values[i] is MISSING:  # reported in finish, like the text field
                keys = tuple(sorted(batch.payloads[i])[:20])
                self._missing_tenant.append((pid, None, self._key_sets.setdefault(keys, keys)))

    def _repair_findings(self, pid: PointId, repairs: PointRepairs, tenant: str | None) -> Iterable[Finding]:
        """VA110 for text the connector boundary had to escape, VA112 for an id of another type."""
        odd = [r for r in repairs.repairs if r.kind == ID_TYPE]
        text = [r for r in repairs.repairs if r.kind == TEXT]
        if any(r.kind == TOO_DEEP for r in repairs.repairs):
            yield Finding(UNSAFE_TEXT, self.name, pid, 1.0,
                          "payload is nested too deep to read: audited as an outline of its top-level keys", 0.5,
                          {"fields": ["(payload)"], "too_deep": True}, tenant)
        if odd:
            kind = odd[0].detail[0]
            yield Finding(ODD_ID, self.name, pid, 1.0, f"point id is {kind}; recorded as {pid!r}"[:300],
                          0.5, {"id_type": kind}, tenant)
        if text:
            fields = [r.path for r in text]
            chars = sorted({c for r in text for c in r.detail})
            count = len(fields) + repairs.more
            named = ", ".join(fields[:3]) + (f" and {count - 3} more" if count > 3 else "")
            message = (f"{'field' if count == 1 else 'fields'} {named} {'holds' if count == 1 else 'hold'} "
                       f"{' '.join(chars[:5])}, which no UTF-8 encoder accepts (audited as escape text)")
            wide = not repairs.more and all(_wide_text(r) for r in text)
            if wide:
                message += "; a NUL after most characters: UTF-16 text read as UTF-8, an ingestion fault"
            yield Finding(
                UNSAFE_TEXT, self.name, pid, float(count), message, 0.5,
                {"fields": fields, "more_fields": repairs.more, "characters": chars, "utf16_as_utf8": wide},
                tenant, severity=Severity.LOW if wide else None,
            )

    def finish(self, ctx: ScanContext) -> Iterable[Finding]:
        table = ctx.table
        yield from self._missing_field_findings(MISSING_TEXT, ctx.field_map.text, "--text-field", self._missing_text)
        yield from self._missing_field_findings(
            MISSING_TENANT, ctx.field_map.tenant, "--tenant-field", self._missing_tenant
        )
        yield from self._duplicate_ids(ctx)
        yield from self._norm_outliers(ctx)
        max_ev = int(self.params["max_group_evidence"])
        # identical vectors under different ids (broken vectors are reported above, not here)
        valid = ctx.valid_mask()
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i, h in enumerate(table.vector_hashes):
            if valid[i]:
                by_hash[h].append(i)
        for rows in by_hash.values():
            members = list(dict.fromkeys(table.ids[r] for r in rows))
            if len(members) < 2:  # copies of one id are VA111, not "several ids"
                continue
            distinct_texts = {table.text_hashes[r] for r in rows}
            same_text = len(distinct_texts) == 1
            words = {r: content_words(table.texts[r]) for r in rows} if ctx.field_map.text and not same_text else {}
            for r in rows:
                others = [m for m in members if m != table.ids[r]]
                versions = bool(words) and min(
                    containment(words[r], words[o]) for o in rows if o != r
                ) >= float(self.params["version_containment"])
                yield Finding(
                    DUPLICATE_VECTOR,
                    self.name,
                    table.ids[r],
                    float(len(rows)),
                    f"vector identical to {len(others)} other point(s)"
                    + ("" if same_text else " whose text is another version of this one" if versions
                       else " whose text differs"),
                    2.0,
                    {"group_size": len(rows), "others": others[:max_ev], "same_text": same_text,
                     **({"versions": True} if versions else {})},
                    table.tenants[r],
                    severity=Severity.INFO if same_text or versions else None,
                )
        # one document id, several points, different texts
        if ctx.field_map.doc_id:
            by_doc: dict[str, list[int]] = defaultdict(list)
            for i, d in enumerate(table.doc_ids):
                if d is not None:
                    by_doc[str(d)].append(i)
            for doc, rows in by_doc.items():
                texts = {table.text_hashes[r] for r in rows}
                members = list(dict.fromkeys(table.ids[r] for r in rows))
                if len(members) < 2 or len(texts) < 2:  # one id's copies disagreeing is VA111
                    continue
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

    def _missing_field_findings(
        self,
        rule: Rule,
        field: str | None,
        option: str,
        missing: list[tuple[PointId, str | None, tuple[str, ...]]],
    ) -> Iterable[Finding]:
        """``rule`` (VA107 text, VA108 tenant) per point, or once for the collection when (nearly) every point
        lacks the field: then the field map is wrong, not the points, and the finding names the keys the payloads
        do have."""
        total = self._points
        if not missing:
            return
        share = len(missing) / max(total, 1)
        kind = "text" if rule is MISSING_TEXT else "tenant"
        if share >= float(self.params["missing_field_share"]):
            counts: Counter[str] = Counter()
            for _, _, keys in missing:
                counts.update(keys)
            present = [f"{_short(k)} ({n:,})" for k, n in counts.most_common(10)]
            yield Finding(
                rule,
                self.name,
                None,
                share,
                f"{kind} field {field!r} is missing on {len(missing):,} of {total:,} points: check {option}; "
                f"payload keys present: {', '.join(present) or 'none'}",
                float(self.params["missing_field_share"]),
                {"field": field, "missing": len(missing), "points": total, "payload_keys": present},
                None,
                identity=f"{kind}-field-missing:{field}",
            )
            return
        for pid, tenant, keys in missing:
            yield Finding(
                rule,
                self.name,
                pid,
                1.0,
                f"payload has no {field!r} field",
                0.5,
                {"field": field, "payload_keys": [_short(k) for k in keys]},
                tenant,
            )

    def _duplicate_ids(self, ctx: ScanContext) -> Iterable[Finding]:
        """VA111 once per id stored more than once: LOW when the copies are identical, MEDIUM when they differ
        (which copy does the store serve?)."""
        table = ctx.table
        max_ev = int(self.params["max_group_evidence"])
        for rows in duplicate_ids(ctx).values():
            vectors = len({table.vector_hashes[r] for r in rows})
            payloads = len({table.payload_hashes[r] for r in rows})
            same = vectors == 1 and payloads == 1
            differ = "identical copies" if same else f"{vectors} distinct vector(s), {payloads} distinct payload(s)"
            pid = table.ids[rows[0]]
            yield Finding(
                DUPLICATE_ID,
                self.name,
                pid,
                float(len(rows)),
                f"id {pid!r} is stored {len(rows)} times ({differ})"[:300],
                1.0,
                {"copies": len(rows), "rows": rows[:max_ev], "distinct_vectors": vectors,
                 "distinct_payloads": payloads},
                table.tenants[rows[-1]],
                severity=Severity.LOW if same else None,
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


def _wide_text(repair: Repair) -> bool:
    """A text whose only unsafe characters are the NULs of UTF-16 read as UTF-8: an ingestion fault, LOW (nothing
    is hidden); a stray NUL, which cuts a string short for a C consumer, stays MEDIUM."""
    return repair.detail == ("\\u0000",) and repair.utf16


def duplicate_ids(ctx: ScanContext) -> dict[str, list[int]]:
    """Table rows of every point id stored more than once (by point key), computed once per scan and shared
    (provenance leaves these ids out of its comparisons)."""
    found = ctx.shared.get("duplicate_id_rows")
    if found is None:
        found = ctx.shared["duplicate_id_rows"] = duplicate_id_rows(ctx.table.ids)
    return dict(found)


def _short(key: str, limit: int = 40) -> str:
    """A payload key for a message: bounded and masked (a key is data the store's writer chose)."""
    text = key if len(key) <= limit else key[: limit - 1] + "…"
    return redact_text(text)
