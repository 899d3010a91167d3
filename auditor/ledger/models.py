"""SQLAlchemy 2 table models of the ledger (rows only; domain objects live in auditor.findings).

Constraint names follow one convention from the first migration; enumerations are CHECK constraints;
times are timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SCAN_STATUSES = ("running", "completed", "partial", "failed", "abandoned")
REVIEW_STATUSES = ("open", "confirmed", "false_positive", "accepted", "quarantined", "resolved")
VERDICTS = ("confirmed", "false_positive", "accepted", "open", "resolved")
CHANGE_KINDS = ("new", "changed", "deleted")
QUARANTINE_MODES = ("tag", "move")
QUARANTINE_STATES = ("planned", "backed_up", "applied", "releasing", "released", "failed", "rolled_back")
SEVERITIES = ("info", "low", "medium", "high", "critical")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class CollectionRow(Base):
    """An audited collection: store URI (redacted) + collection + vector name."""

    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    source: Mapped[str] = mapped_column(String(1000))
    name: Mapped[str] = mapped_column(String(300))
    vector_name: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScanRow(Base):
    __tablename__ = "scans"
    __table_args__ = (CheckConstraint(_in("status", SCAN_STATUSES), name="status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"), index=True)
    source: Mapped[str] = mapped_column(String(1000))
    collection_name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    operator: Mapped[str | None] = mapped_column(String(200))
    tool_version: Mapped[str] = mapped_column(String(50))
    field_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    detector_configs: Mapped[list[Any]] = mapped_column(default=list)
    collection_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[list[Any]] = mapped_column(default=list)
    resume_cursor: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    points_scanned: Mapped[int] = mapped_column(Integer, default=0)
    incremental: Mapped[bool] = mapped_column(default=False)

    collection: Mapped[CollectionRow] = relationship()


class PointVersionRow(Base):
    """A point's fingerprint in the scan where it first appeared, changed, or disappeared."""

    __tablename__ = "point_versions"
    __table_args__ = (
        CheckConstraint(_in("change", CHANGE_KINDS), name="change"),
        Index("ix_point_versions_collection_point", "collection_id", "point_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), index=True)
    point_key: Mapped[str] = mapped_column(String(300))
    change: Mapped[str] = mapped_column(String(10))
    vector_hash: Mapped[str | None] = mapped_column(String(64))
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    text_hash: Mapped[str | None] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(300))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class FindingRow(Base):
    __tablename__ = "findings"
    __table_args__ = (
        CheckConstraint(_in("status", REVIEW_STATUSES), name="status"),
        CheckConstraint(_in("severity", SEVERITIES), name="severity"),
        Index("ix_findings_collection_status", "collection_id", "status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    detector: Mapped[str] = mapped_column(String(100))
    rule_id: Mapped[str] = mapped_column(String(20), index=True)
    point_key: Mapped[str | None] = mapped_column(String(300), index=True)
    tenant: Mapped[str | None] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(10))
    confidence: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="open")
    first_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    last_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    collection: Mapped[CollectionRow] = relationship()
    occurrences: Mapped[list[FindingOccurrenceRow]] = relationship(back_populates="finding")
    reviews: Mapped[list[ReviewRow]] = relationship(back_populates="finding", order_by="ReviewRow.id")


class FindingOccurrenceRow(Base):
    __tablename__ = "finding_occurrences"
    __table_args__ = (UniqueConstraint("finding_id", "scan_id", name="uq_finding_occurrences_finding_scan"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"), index=True)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(default=dict)
    message: Mapped[str] = mapped_column(Text)
    # "observe" (pass 1) or "finish" (pass 2): incremental scans carry pass-1 findings of unchanged points.
    stage: Mapped[str | None] = mapped_column(String(10))

    finding: Mapped[FindingRow] = relationship(back_populates="occurrences")


class ReviewRow(Base):
    """Append-only human verdicts on findings."""

    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint(_in("verdict", VERDICTS), name="verdict"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    finding: Mapped[FindingRow] = relationship(back_populates="reviews")


class QuarantineActionRow(Base):
    """One quarantine of one point: the full backup is committed before the store is touched."""

    __tablename__ = "quarantine_actions"
    __table_args__ = (
        CheckConstraint(_in("mode", QUARANTINE_MODES), name="mode"),
        CheckConstraint(_in("state", QUARANTINE_STATES), name="state"),
        Index("ix_quarantine_actions_collection_point", "collection_id", "point_key"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    point_key: Mapped[str] = mapped_column(String(300))
    mode: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(20), default="planned")
    finding_ids: Mapped[list[Any]] = mapped_column(default=list)
    reason: Mapped[str | None] = mapped_column(Text)
    backup: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    point_version: Mapped[str | None] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(300))
    flag_field: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(200))
    released_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # Holds an advisory token while an apply/release runs, so concurrent runs don't double-apply.
    lock_token: Mapped[str | None] = mapped_column(String(64))


class ScanLockRow(Base):
    """One row per collection while a scan runs (ledger-level lock for scheduled scans)."""

    __tablename__ = "scan_locks"
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"), primary_key=True)
    scan_id: Mapped[int | None] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(300))
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String(300))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class CalibrationResetRow(Base):
    """``vecaudit calibration reset``: false_positive verdicts given before ``created_at`` no longer recalibrate
    the rule (or every rule, when ``rule_id`` is None) of this collection."""

    __tablename__ = "calibration_resets"
    __table_args__ = (Index("ix_calibration_resets_collection_rule", "collection_id", "rule_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    rule_id: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TenantSummaryRow(Base):
    """A compact per-tenant picture of the vectors of one completed scan (for drift against the next scan):
    count, centroid (float32) and a seeded bottom-k sample of vectors (float16, keyed by point hash)."""

    __tablename__ = "tenant_summaries"
    __table_args__ = (Index("ix_tenant_summaries_collection_scan", "collection_id", "scan_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    tenant: Mapped[str | None] = mapped_column(String(300))
    count: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    centroid: Mapped[bytes] = mapped_column(LargeBinary)
    sample: Mapped[bytes] = mapped_column(LargeBinary)
    sample_size: Mapped[int] = mapped_column(Integer)
