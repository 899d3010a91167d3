"""The scan engine: pass 1 streams batches through detectors and fingerprints every point; pass 2 runs the
collection-level detectors on the shared neighbour graph; everything lands in the ledger."""

from __future__ import annotations

import getpass
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from auditor import __version__
from auditor.batching import resolve_batch
from auditor.connector import Connector, cursor_to_json
from auditor.context import ScanContext, ScanSettings
from auditor.detector import Detector
from auditor.errors import ConnectorError, ExitCode, VecauditError
from auditor.findings import Finding, point_key
from auditor.hashing import point_version
from auditor.ledger import repository as repo
from auditor.ledger.models import ScanRow
from auditor.ledger.session import Ledger
from auditor.progress import progress_bar
from auditor.types import FieldMap, Severity

log = logging.getLogger(__name__)


@dataclass
class ScanResult:
    """Outcome of one scan: the ledger scan id, status, counts and the findings as recorded."""

    scan_id: int
    status: str
    collection_key: str
    points_scanned: int
    counts: dict[str, Any]
    findings: list[repo.RecordedFinding]
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    error_exit: int | None = None

    def exit_code(self, fail_on: Severity = Severity.HIGH) -> int:
        """0 clean, 1 active findings at or above ``fail_on``, 3 incomplete, 130 interrupted."""
        if self.error_exit is not None:
            return self.error_exit
        if self.status != "completed":
            return ExitCode.INCOMPLETE
        for rec in self.findings:
            if rec.status not in repo.SILENCED_STATUSES and rec.finding.effective_severity >= fail_on:
                return ExitCode.FINDINGS
        return ExitCode.CLEAN


@dataclass
class ScanOptions:
    field_map: FieldMap = field(default_factory=FieldMap)
    settings: ScanSettings = field(default_factory=ScanSettings)
    batch_size: int = 512
    show_progress: bool = True
    operator: str | None = None
    spill_dir: str | None = None


class Scanner:
    """Runs one scan of one collection with a set of detectors into a ledger."""

    def __init__(self, ledger: Ledger, connector: Connector, detectors: Sequence[Detector], options: ScanOptions):
        self.ledger = ledger
        self.connector = connector
        self.detectors = list(detectors)
        self.options = options

    def run(self) -> ScanResult:
        opts = self.options
        info = self.connector.describe()  # user errors (unknown collection, ...) surface before the ledger row
        collection_key = self.connector.collection_key
        with self.ledger.session() as s:
            coll = repo.get_or_create_collection(
                s,
                key=collection_key,
                source=self.connector.uri.redacted(),
                name=info.name,
                vector_name=info.vector_name,
            )
            previous_scan = repo.last_completed_scan(s, coll.id)
            previous = repo.latest_point_states(s, coll.id) if previous_scan is not None else None
            scan = ScanRow(
                collection_id=coll.id,
                source=self.connector.uri.redacted(),
                collection_name=info.name,
                status="running",
                operator=opts.operator or _whoami(),
                tool_version=__version__,
                field_map=opts.field_map.as_dict(),
                detector_configs=[d.config() for d in self.detectors],
                collection_info=info.as_dict(),
                counts={},
                notes=[],
            )
            s.add(scan)
            s.flush()
            scan_id, collection_id = scan.id, coll.id

        ctx = ScanContext(
            info=info,
            field_map=opts.field_map,
            collection_key=collection_key,
            settings=opts.settings,
            previous=previous,
            connector=self.connector,
            spill_dir=opts.spill_dir,
        )
        active: list[Detector] = []
        for det in self.detectors:
            reason = det.skip_reason(ctx)
            if reason:
                ctx.note(f"detector {det.name} skipped: {reason}")
            else:
                active.append(det)
        findings: list[Finding] = []
        cursor: Any = None
        status, error, error_exit = "completed", None, None
        try:
            for det in active:
                det.begin(ctx)
                ctx.request_neighbours(det.neighbours_needed())
            cursor = self._pass_one(ctx, active, findings)
            ctx.table.seal()
            self._pass_two(ctx, active, findings)
        except KeyboardInterrupt:
            status, error, error_exit = "failed", "interrupted", ExitCode.INTERRUPTED
        except VecauditError as e:
            status = "partial" if len(ctx.table) else "failed"
            error, error_exit = str(e), e.exit_code
            log.debug("scan failed", exc_info=True)
        except Exception as e:
            status = "partial" if len(ctx.table) else "failed"
            error, error_exit = f"{type(e).__name__}: {e}", ExitCode.INCOMPLETE
            log.debug("scan failed:\n%s", traceback.format_exc())
        if status == "completed" and any(n.startswith("detector ") and " failed:" in n for n in ctx.notes):
            status = "partial"

        try:
            return self._record(ctx, scan_id, collection_id, findings, status, error, error_exit, cursor, active)
        finally:
            ctx.close()

    # -- passes -----------------------------------------------------------------------------------------
    def _pass_one(self, ctx: ScanContext, active: list[Detector], findings: list[Finding]) -> Any:
        opts = self.options
        bar = progress_bar(total=ctx.info.count or None, desc="scan", unit="pt", enabled=opts.show_progress)
        cursor: Any = None
        try:
            for page, page_cursor in self.connector.iter_batches(batch_size=opts.batch_size):
                batch = resolve_batch(page, opts.field_map, ctx.info.dim, offset=len(ctx.table))
                ctx.table.append(batch)
                for det in active:
                    findings.extend(self._guard(ctx, det, "observe", lambda d=det, b=batch: list(d.observe(b, ctx))))
                bar.update(len(batch))
                cursor = page_cursor
        except ConnectorError:
            raise
        finally:
            bar.close()
        return cursor

    def _pass_two(self, ctx: ScanContext, active: list[Detector], findings: list[Finding]) -> None:
        for det in active:
            findings.extend(self._guard(ctx, det, "finish", lambda d=det: list(d.finish(ctx))))

    @staticmethod
    def _guard(ctx: ScanContext, det: Detector, stage: str, fn: Any) -> list[Finding]:
        """Run one detector stage; a detector bug makes the scan partial instead of losing the others."""
        try:
            return list(fn())
        except (VecauditError, KeyboardInterrupt):
            raise
        except Exception as e:
            log.debug("detector %s failed in %s", det.name, stage, exc_info=True)
            ctx.note(f"detector {det.name} failed: {type(e).__name__}: {e} (in {stage})")
            return []

    # -- ledger -----------------------------------------------------------------------------------------
    def _record(
        self,
        ctx: ScanContext,
        scan_id: int,
        collection_id: int,
        findings: list[Finding],
        status: str,
        error: str | None,
        error_exit: int | None,
        cursor: Any,
        active: list[Detector],
    ) -> ScanResult:
        table = ctx.table
        counts: dict[str, Any] = {"points": len(table), "findings": 0}
        recorded: list[repo.RecordedFinding] = []
        with self.ledger.session() as s:
            if status == "completed":
                changes, change_counts = _point_changes(ctx)
                repo.record_point_changes(s, collection_id=collection_id, scan_id=scan_id, changes=changes)
                counts.update(change_counts)
                items = []
                for f in findings:
                    row = table.row_of(f.point_id) if f.point_id is not None else None
                    version = (
                        point_version(table.vector_hashes[row], table.text_hashes[row]) if row is not None else None
                    )
                    items.append((f, f.fingerprint(ctx.collection_key, version)))
                recorded = repo.record_findings(s, collection_id=collection_id, scan_id=scan_id, items=items)
                repo.resolve_absent_findings(
                    s, collection_id=collection_id, scan_id=scan_id, detectors=[d.name for d in active]
                )
                counts["findings"] = len(recorded)
                counts.update(repo.scan_finding_summary(s, scan_id))
            repo.finish_scan(
                s,
                scan_id,
                status=status,
                counts=counts,
                points_scanned=len(table),
                notes=ctx.notes,
                error=error,
                cursor=cursor_to_json(cursor) if status != "completed" else None,
            )
        return ScanResult(
            scan_id=scan_id,
            status=status,
            collection_key=ctx.collection_key,
            points_scanned=len(table),
            counts=counts,
            findings=recorded,
            notes=list(ctx.notes),
            error=error,
            error_exit=error_exit,
        )


def _point_changes(ctx: ScanContext) -> tuple[list[repo.PointChange], dict[str, Any]]:
    """New / changed / deleted points against the previous completed scan (all new on a baseline)."""
    table = ctx.table
    previous = ctx.previous
    changes: list[repo.PointChange] = []
    seen: set[str] = set()
    new = changed = 0
    for i, pid in enumerate(table.ids):
        key = point_key(pid)
        seen.add(key)
        vh, ph, th, tenant = table.vector_hashes[i], table.payload_hashes[i], table.text_hashes[i], table.tenants[i]
        old = previous.get(key) if previous is not None else None
        if old is None:
            new += 1
            changes.append(repo.PointChange(key, "new", vh, ph, th, tenant))
        elif (old.vector_hash, old.payload_hash, old.text_hash) != (vh, ph, th):
            changed += 1
            changes.append(repo.PointChange(key, "changed", vh, ph, th, tenant))
    deleted = 0
    if previous is not None:
        for key, old in previous.items():
            if key not in seen:
                deleted += 1
                changes.append(repo.PointChange(key, "deleted", None, None, None, old.tenant))
    counts: dict[str, Any] = {"baseline": previous is None, "new": new, "changed": changed, "deleted": deleted}
    return changes, counts


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
