"""Ledger operations used by the engine and the CLI; rows in, plain values out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from auditor.context import PointState
from auditor.errors import ConfigError
from auditor.findings import Finding
from auditor.ledger.models import (
    REVIEW_STATUSES,
    CollectionRow,
    FindingOccurrenceRow,
    FindingRow,
    PointVersionRow,
    QuarantineActionRow,
    ReviewRow,
    ScanRow,
    utcnow,
)
from auditor.masking import redact_json, redact_text
from auditor.types import Severity

# A human verdict stays in force across scans; these statuses are not reopened by a new occurrence.
STICKY_STATUSES = ("false_positive", "accepted", "confirmed", "quarantined")
# Statuses that silence a finding for exit codes and "open" listings.
SILENCED_STATUSES = ("false_positive", "accepted", "resolved")
#: Rows per bulk statement: SQLAlchemy batches them into multi-row INSERTs (``insertmanyvalues``) or executemany
#: on SQLite and PostgreSQL alike; a chunk bounds the parameter list held at once.
_BULK_ROWS = 5000
#: Ids per ``IN (...)`` list: well under SQLite's 999 bound parameters of old builds.
_IN_CHUNK = 500


def get_or_create_collection(
    session: Session, *, key: str, source: str, name: str, vector_name: str | None
) -> CollectionRow:
    row = session.scalar(select(CollectionRow).where(CollectionRow.key == key))
    if row is None:
        row = CollectionRow(key=key, source=source, name=name, vector_name=vector_name)
        session.add(row)
        session.flush()
    return row


def last_completed_scan(session: Session, collection_id: int) -> ScanRow | None:
    return session.scalar(
        select(ScanRow)
        .where(ScanRow.collection_id == collection_id, ScanRow.status == "completed")
        .order_by(ScanRow.id.desc())
        .limit(1)
    )


def latest_point_states(session: Session, collection_id: int) -> dict[str, PointState]:
    """Each live point's last recorded fingerprint in this collection (deleted points left out)."""
    latest = (
        select(func.max(PointVersionRow.id))
        .where(PointVersionRow.collection_id == collection_id)
        .group_by(PointVersionRow.point_key)
        .scalar_subquery()
    )
    first = (
        select(PointVersionRow.point_key, func.min(PointVersionRow.scan_id).label("first_scan"))
        .where(PointVersionRow.collection_id == collection_id)
        .group_by(PointVersionRow.point_key)
        .subquery()
    )
    rows = session.execute(
        select(
            PointVersionRow.point_key,
            PointVersionRow.change,
            PointVersionRow.vector_hash,
            PointVersionRow.payload_hash,
            PointVersionRow.text_hash,
            PointVersionRow.tenant,
            first.c.first_scan,
        )
        .join(first, first.c.point_key == PointVersionRow.point_key)
        .where(PointVersionRow.id.in_(latest))
    )
    return {
        key: PointState(vh or "", ph or "", th, tenant, first_scan)
        for key, change, vh, ph, th, tenant, first_scan in rows
        if change != "deleted"
    }


@dataclass
class PointChange:
    point_key: str
    change: str
    vector_hash: str | None
    payload_hash: str | None
    text_hash: str | None
    tenant: str | None


def record_point_changes(session: Session, *, collection_id: int, scan_id: int, changes: Iterable[PointChange]) -> int:
    """One point-version row per change, written through the driver's executemany (:func:`_insert_plain`)."""
    table = PointVersionRow.__table__
    keys = ("collection_id", "scan_id", "point_key", "change", "vector_hash", "payload_hash", "text_hash", "tenant",
            "recorded_at")
    recorded_at = _bound(session, table.c.recorded_at, utcnow())
    rows = [
        (collection_id, scan_id, c.point_key, c.change, c.vector_hash, c.payload_hash, c.text_hash, c.tenant,
         recorded_at)
        for c in changes
    ]
    _insert_plain(session, table, keys, rows)
    return len(rows)


def _bound(session: Session, column: Any, value: Any) -> Any:
    """``value`` as the column's type hands it to this session's driver (e.g. a UTC datetime as SQLite's text)."""
    dialect = session.connection().dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if processor is None else processor(value)


def _insert_plain(session: Session, table: Any, keys: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """INSERT rows of plain driver values (ints, strings, None, values already :func:`_bound`) into ``table``,
    ``_BULK_ROWS`` per executemany, straight to the driver.

    Why not ``session.execute(insert(...), dicts)``: SQLAlchemy processes every parameter of every row in Python
    (about as long as SQLite's own insert: 5.7 of 12 s for 200,000 point versions), and a million-point first scan
    writes a million rows. Dialects whose driver takes neither ``?`` nor ``%s`` marks go the SQLAlchemy way."""
    conn = session.connection()
    dialect = conn.dialect
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    if mark is None:
        dicts = [dict(zip(keys, row, strict=True)) for row in rows]
        for start in range(0, len(dicts), _BULK_ROWS):
            session.execute(insert(table), dicts[start : start + _BULK_ROWS])
        return
    quote = dialect.identifier_preparer
    sql = (f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(k) for k in keys)}) "
           f"VALUES ({', '.join([mark] * len(keys))})")
    for start in range(0, len(rows), _BULK_ROWS):
        conn.exec_driver_sql(sql, list(rows[start : start + _BULK_ROWS]))


@dataclass
class RecordedFinding:
    finding: Finding
    row_id: int
    fingerprint: str
    status: str
    is_new: bool
    #: Whether it alerts (exit code, --notify) and why: decided by the engine (auditor.alerting).
    alert: bool = False
    alert_reason: str = ""
    #: The finding's severity as the ledger held it before this scan (None for a new finding).
    previous_severity: str | None = None


def record_findings(
    session: Session, *, collection_id: int, scan_id: int, items: Sequence[tuple[Finding, str]],
    stages: Sequence[str | None] | None = None,
) -> list[RecordedFinding]:
    """Upsert findings by fingerprint and add one occurrence each for this scan, in bulk: new findings are one
    multi-row INSERT ... RETURNING per chunk, known ones one executemany UPDATE by primary key, occurrences one
    multi-row INSERT (a 1M-point first scan with 170k findings was ~230 s row by row). ``stages[i]`` is the
    occurrence's stage ("observe" / "finish") for ``items[i]``; a fingerprint seen twice keeps the first."""
    from auditor.findings import point_key

    now = utcnow()
    fps = list(dict.fromkeys(fp for _, fp in items))
    existing: dict[str, tuple[int, str, str, int]] = {}
    for start in range(0, len(fps), _IN_CHUNK):
        chunk = fps[start : start + _IN_CHUNK]
        stmt = select(FindingRow.fingerprint, FindingRow.id, FindingRow.severity, FindingRow.status,
                      FindingRow.last_scan_id).where(FindingRow.fingerprint.in_(chunk))
        for fp, row_id, severity, status, last_scan in session.execute(stmt):
            existing[fp] = (row_id, severity, status, last_scan)
    new_rows: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    # per kept item: finding, fingerprint, masked message and evidence, stage, known row (None: new)
    kept: list[tuple[Finding, str, str, Any, str | None, tuple[int, str, str, int] | None]] = []
    seen: set[str] = set()
    for i, (finding, fp) in enumerate(items):
        found = existing.get(fp)
        if fp in seen or (found is not None and found[3] == scan_id):
            continue  # the same identity twice in one scan: keep the first
        seen.add(fp)
        # what a detector wrote is masked again before it is stored (a detector may quote the text it read)
        message, evidence = redact_text(finding.message), redact_json(finding.evidence)
        severity = finding.effective_severity.value
        if found is None:
            new_rows.append({
                "fingerprint": fp, "collection_id": collection_id, "detector": finding.detector,
                "rule_id": finding.rule_id,
                "point_key": None if finding.point_id is None else point_key(finding.point_id),
                "tenant": finding.tenant, "severity": severity, "confidence": finding.effective_confidence.value,
                "title": finding.rule.title, "message": message, "tags": list(finding.tags), "status": "open",
                "first_scan_id": scan_id, "last_scan_id": scan_id, "first_seen_at": now, "last_seen_at": now,
            })
        else:
            status = "open" if found[2] == "resolved" else found[2]  # a resolved finding that came back
            updates.append({"id": found[0], "last_scan_id": scan_id, "last_seen_at": now, "message": message,
                            "severity": severity, "status": status})
        kept.append((finding, fp, message, evidence, None if stages is None else stages[i], found))
    ids: dict[str, int] = {fp: row[0] for fp, row in existing.items()}
    # RETURNING the fingerprint with the id: rows are matched by it, so the batches need not keep their order
    returning = insert(FindingRow).returning(FindingRow.fingerprint, FindingRow.id)
    for start in range(0, len(new_rows), _BULK_ROWS):
        ids.update((fp, row_id) for fp, row_id in session.execute(returning, new_rows[start : start + _BULK_ROWS]))
    for start in range(0, len(updates), _BULK_ROWS):
        session.execute(update(FindingRow), updates[start : start + _BULK_ROWS])
    occurrences = [
        {"finding_id": ids[fp], "scan_id": scan_id, "score": float(finding.score),
         "threshold": None if finding.threshold is None else float(finding.threshold),
         "evidence": evidence, "message": message, "stage": stage}
        for finding, fp, message, evidence, stage, _ in kept
    ]
    for start in range(0, len(occurrences), _BULK_ROWS):
        session.execute(insert(FindingOccurrenceRow), occurrences[start : start + _BULK_ROWS])
    out = []
    for finding, fp, _, _, _, found in kept:
        status = "open" if found is None or found[2] == "resolved" else found[2]
        out.append(RecordedFinding(finding, ids[fp], fp, status, found is None,
                                   previous_severity=None if found is None else found[1]))
    return out


def resolve_absent_findings(session: Session, *, collection_id: int, scan_id: int, detectors: Sequence[str]) -> int:
    """Open findings of the detectors that ran which did not recur in this complete scan become resolved."""
    result = session.execute(
        update(FindingRow)
        .where(
            FindingRow.collection_id == collection_id,
            FindingRow.status == "open",
            FindingRow.last_scan_id != scan_id,
            FindingRow.detector.in_(list(detectors)),
        )
        .values(status="resolved")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def add_review(session: Session, *, finding_id: int, reviewer: str, verdict: str, note: str | None) -> FindingRow:
    row = session.get(FindingRow, finding_id)
    if row is None:
        raise ConfigError(f"no finding with id {finding_id}", hint="see `vecaudit findings list`")
    if verdict not in REVIEW_STATUSES:
        raise ConfigError(f"unknown verdict {verdict!r}")
    note = None if note is None else redact_text(note)
    session.add(ReviewRow(finding_id=finding_id, reviewer=reviewer, verdict=verdict, note=note))
    row.status = verdict
    session.flush()
    return row


@dataclass
class FindingFilter:
    severity: Severity | None = None
    status: Sequence[str] | None = None
    detector: Sequence[str] | None = None
    rule_id: Sequence[str] | None = None
    scan_id: int | None = None
    collection: str | None = None
    tenant: str | None = None
    point_key: str | None = None
    limit: int | None = None


def query_findings(session: Session, flt: FindingFilter) -> list[FindingRow]:
    stmt = select(FindingRow).order_by(FindingRow.id)
    if flt.severity is not None:
        allowed = [s.value for s in Severity if s >= flt.severity]
        stmt = stmt.where(FindingRow.severity.in_(allowed))
    if flt.status:
        stmt = stmt.where(FindingRow.status.in_(list(flt.status)))
    if flt.detector:
        stmt = stmt.where(FindingRow.detector.in_(list(flt.detector)))
    if flt.rule_id:
        stmt = stmt.where(FindingRow.rule_id.in_(list(flt.rule_id)))
    if flt.tenant is not None:
        stmt = stmt.where(FindingRow.tenant == flt.tenant)
    if flt.point_key is not None:
        stmt = stmt.where(FindingRow.point_key == flt.point_key)
    if flt.collection:
        stmt = stmt.join(CollectionRow).where(
            (CollectionRow.name == flt.collection) | (CollectionRow.key == flt.collection)
        )
    if flt.scan_id is not None:
        stmt = stmt.where(
            FindingRow.id.in_(
                select(FindingOccurrenceRow.finding_id).where(FindingOccurrenceRow.scan_id == flt.scan_id)
            )
        )
    if flt.limit:
        stmt = stmt.limit(flt.limit)
    return list(session.scalars(stmt))


def review_counts(session: Session, *, collection: str | None = None) -> list[tuple[str, str, str, str, int]]:
    """``(detector, rule_id, title, status, count)`` of the ledger's findings (one collection by name or key)."""
    stmt = select(FindingRow.detector, FindingRow.rule_id, func.min(FindingRow.title), FindingRow.status, func.count())
    if collection:
        stmt = stmt.join(CollectionRow).where((CollectionRow.name == collection) | (CollectionRow.key == collection))
    stmt = stmt.group_by(FindingRow.detector, FindingRow.rule_id, FindingRow.status)
    return [(d, r, t, st, int(n)) for d, r, t, st, n in session.execute(stmt)]


def collections_named(session: Session, collection: str | None) -> list[CollectionRow]:
    """The audited collections whose name or key is ``collection`` (every collection when None)."""
    stmt = select(CollectionRow).order_by(CollectionRow.id)
    if collection:
        stmt = stmt.where((CollectionRow.name == collection) | (CollectionRow.key == collection))
    return list(session.scalars(stmt))


def latest_occurrence(session: Session, finding_id: int, scan_id: int | None = None) -> FindingOccurrenceRow | None:
    stmt = select(FindingOccurrenceRow).where(FindingOccurrenceRow.finding_id == finding_id)
    if scan_id is not None:
        stmt = stmt.where(FindingOccurrenceRow.scan_id == scan_id)
    return session.scalar(stmt.order_by(FindingOccurrenceRow.id.desc()).limit(1))


def findings_by_id(session: Session, finding_ids: Sequence[int]) -> dict[int, FindingRow]:
    """The finding rows of ``finding_ids``, by id, in one SELECT per 500 ids (a scan's JSON document listed 11,700
    findings at 1M points with two statements each)."""
    out: dict[int, FindingRow] = {}
    ids = list(dict.fromkeys(finding_ids))
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        out.update((row.id, row) for row in session.scalars(select(FindingRow).where(FindingRow.id.in_(chunk))))
    return out


def latest_occurrences(
    session: Session, finding_ids: Sequence[int], scan_id: int | None = None
) -> dict[int, FindingOccurrenceRow]:
    """:func:`latest_occurrence` of every one of ``finding_ids`` (those with one), by finding id, in one SELECT per
    500 ids: the occurrence with the highest id, of ``scan_id`` when given."""
    out: dict[int, FindingOccurrenceRow] = {}
    ids = list(dict.fromkeys(finding_ids))
    for start in range(0, len(ids), _IN_CHUNK):
        stmt = select(FindingOccurrenceRow).where(FindingOccurrenceRow.finding_id.in_(ids[start : start + _IN_CHUNK]))
        if scan_id is not None:
            stmt = stmt.where(FindingOccurrenceRow.scan_id == scan_id)
        for occ in session.scalars(stmt.order_by(FindingOccurrenceRow.id)):
            out[occ.finding_id] = occ  # ascending ids: the last one kept is the latest
    return out



def point_history(session: Session, point_keys: Sequence[str]) -> dict[str, list[Any]]:
    """Everything the ledger knows about a point: versions, findings (with reviews), quarantine actions."""
    versions = list(
        session.scalars(
            select(PointVersionRow).where(PointVersionRow.point_key.in_(point_keys)).order_by(PointVersionRow.id)
        )
    )
    findings = list(
        session.scalars(select(FindingRow).where(FindingRow.point_key.in_(point_keys)).order_by(FindingRow.id))
    )
    actions = list(
        session.scalars(
            select(QuarantineActionRow)
            .where(QuarantineActionRow.point_key.in_(point_keys))
            .order_by(QuarantineActionRow.id)
        )
    )
    return {"versions": versions, "findings": findings, "quarantine": actions}


def list_scans(session: Session, *, collection: str | None = None, limit: int | None = None) -> list[ScanRow]:
    stmt = select(ScanRow).order_by(ScanRow.id.desc())
    if collection:
        stmt = stmt.where(ScanRow.collection_name == collection)
    if limit:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def scan_finding_summary(session: Session, scan_id: int) -> dict[str, dict[str, int]]:
    """Counts of this scan's findings by detector and by severity."""
    rows = session.execute(
        select(FindingRow.detector, FindingRow.severity, func.count())
        .join(FindingOccurrenceRow, FindingOccurrenceRow.finding_id == FindingRow.id)
        .where(FindingOccurrenceRow.scan_id == scan_id)
        .group_by(FindingRow.detector, FindingRow.severity)
    )
    by_detector: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for detector, severity, count in rows:
        by_detector[detector] = by_detector.get(detector, 0) + count
        by_severity[severity] = by_severity.get(severity, 0) + count
    return {"by_detector": by_detector, "by_severity": by_severity}


def finish_scan(
    session: Session,
    scan_id: int,
    *,
    status: str,
    counts: dict[str, Any],
    points_scanned: int,
    notes: list[str],
    error: str | None = None,
    cursor: str | None = None,
    finished_at: datetime | None = None,
) -> None:
    scan = session.get(ScanRow, scan_id)
    assert scan is not None
    scan.status = status
    scan.counts = counts
    scan.points_scanned = points_scanned
    scan.notes = [redact_text(n) for n in notes]
    scan.error = None if error is None else redact_text(error)
    scan.resume_cursor = cursor
    scan.finished_at = finished_at or utcnow()
