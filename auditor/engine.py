"""The scan engine: pass 1 streams batches through detectors and fingerprints every point; pass 2 runs the
collection-level detectors on the shared neighbour graph; everything lands in the ledger. Scheduled-scan
features live here too: the per-collection scan lock, incremental pass 1, and the ``--notify`` webhook."""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import time
import traceback
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from auditor import __version__, calibration, summaries
from auditor.alerting import DEFAULT_ALERT_ON, alert_decision
from auditor.batching import resolve_batch
from auditor.budget import apply_budget, budgets_for
from auditor.connector import Connector, cursor_to_json
from auditor.context import ScanContext, ScanSettings
from auditor.detector import Detector
from auditor.errors import ConnectorError, ExitCode, VecauditError
from auditor.findings import Finding, Rule, point_key
from auditor.hashing import point_states, point_version
from auditor.ledger import repository as repo
from auditor.ledger.models import FindingOccurrenceRow, FindingRow, ScanRow
from auditor.ledger.session import Ledger
from auditor.notify import post_json, should_notify, summary_payload
from auditor.progress import progress_bar
from auditor.scanlock import DEFAULT_STALE_AFTER, ScanLock
from auditor.types import Confidence, FieldMap, PointId, RecordBatch, Severity

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
        """0 clean, 1 alerting findings at or above ``fail_on`` (see auditor.alerting), 3 incomplete,
        130 interrupted."""
        if self.error_exit is not None:
            return self.error_exit
        if self.status != "completed":
            return ExitCode.INCOMPLETE
        for rec in self.findings:
            if rec.alert and rec.finding.effective_severity >= fail_on:
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
    #: Pass 1 of ``pointwise_observe`` detectors only on points new or changed since the last completed scan;
    #: pass 2 patches the neighbour graphs and reuses the re-embeddings the last incremental scan kept.
    incremental: bool = False
    #: Where incremental scans keep that state (default: auditor.statecache.default_state_dir()).
    state_dir: str | None = None
    #: Webhook that receives a JSON summary of new findings (see auditor.notify).
    notify_url: str | None = None
    #: Seconds without a heartbeat after which another host's lock counts as abandoned (every scan holds the
    #: per-collection ledger lock: two scans of one collection never overlap, and a killed one is recognised).
    lock_stale_after: float = DEFAULT_STALE_AFTER
    lock_heartbeat_every: float = 30.0
    #: Which findings alert (exit code, notify) after the baseline scan: "changed" or "all" (auditor.alerting).
    alert_on: str = DEFAULT_ALERT_ON
    #: Review-driven recalibration (auditor.calibration): None turns it off for this scan.
    calibration_min_false_positives: int | None = calibration.MIN_FALSE_POSITIVES


@dataclass
class _Carry:
    """What an incremental scan takes over from the last completed scan."""

    detectors: set[str]
    #: point key -> pass-1 findings (with their fingerprints) of the carried detectors on that point.
    findings: dict[str, list[tuple[Finding, str]]]
    previous_scan_id: int


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
            collection_id = coll.id
        lock = ScanLock(
            self.ledger, collection_id, stale_after=opts.lock_stale_after, heartbeat_every=opts.lock_heartbeat_every
        ).acquire()
        try:
            result = self._run_locked(info, collection_id, lock)
        finally:
            lock.release()
        if opts.notify_url:
            self._notify(result, info.name)
        return result

    def _run_locked(self, info: Any, collection_id: int, lock: ScanLock) -> ScanResult:
        opts = self.options
        collection_key = self.connector.collection_key
        with self.ledger.session() as s:
            previous_scan = repo.last_completed_scan(s, collection_id)
            previous = repo.latest_point_states(s, collection_id) if previous_scan is not None else None
            previous_summaries = summaries.load(s, previous_scan.id) if previous_scan is not None else {}
            carry = self._carry_basis(s, previous_scan) if opts.incremental else None
            calibrations = self._calibrations(s, collection_id)

        ctx = ScanContext(
            info=info,
            field_map=opts.field_map,
            collection_key=collection_key,
            settings=opts.settings,
            previous=previous,
            connector=self.connector,
            spill_dir=opts.spill_dir,
        )
        try:
            active = self._begin_detectors(ctx)
            scan_id = self._open_scan(
                info, collection_id, incremental=carry is not None, lock=lock, calibrations=calibrations
            )
        except BaseException:
            ctx.close()
            raise

        if opts.incremental:
            from auditor.statecache import StateCache, default_state_dir

            ctx.state = StateCache(opts.state_dir or default_state_dir(), collection_key)
            ctx.state.begin(scan_id)
            ctx.reuse_state = True
        if lock.recovered_from:
            ctx.note(f"recovered a stale scan lock from {lock.recovered_from}")
        if previous_scan is not None:
            ctx.shared["previous_scan_id"] = previous_scan.id
        ctx.shared["previous_tenant_summaries"] = previous_summaries
        if opts.incremental and carry is None:
            ctx.note("incremental: no comparable completed scan to build on, ran a full scan")
        findings: list[Finding] = []
        carried: list[tuple[Finding, str]] = []
        stages: dict[int, str] = {}
        cursor: Any = None
        status, error, error_exit = "completed", None, None
        summary_job: futures.Future[dict[str | None, summaries.TenantSummary]] | None = None
        try:
            for det in active:
                ctx.request_neighbours(det.neighbours_needed())
            if carry is not None:
                carry.detectors &= {d.name for d in active}
            started = time.perf_counter()
            cursor = self._pass_one(ctx, active, findings, carry, carried)
            ctx.add_seconds("pass1", time.perf_counter() - started)
            for det in active:
                if carry is not None and det.name in carry.detectors:
                    det.observe_carried([f for f, _ in carried if f.detector == det.name], ctx)
            stages.update((id(f), "observe") for f in findings)
            ctx.table.seal()
            started = time.perf_counter()
            summary_job = _summaries_beside_pass_two(ctx, opts.settings.seed, bool(previous_summaries))
            if summary_job is None:
                ctx.shared["tenant_summaries"] = summaries.summarise(ctx, seed=opts.settings.seed)
            self._pass_two(ctx, active, findings)
            if summary_job is not None:
                ctx.shared["tenant_summaries"] = summary_job.result()
            ctx.add_seconds("pass2", time.perf_counter() - started)
            self._calibrate(ctx, calibrations, [*findings, *(f for f, _ in carried)])
            self._keep_budgets(ctx, active, [*findings, *(f for f, _ in carried)])
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
        if summary_job is not None and "tenant_summaries" not in ctx.shared:
            # pass 2 stopped early: the thread still reads the point table, which closes with the scan
            futures.wait([summary_job])
            if not summary_job.cancelled() and summary_job.exception() is None:
                ctx.shared["tenant_summaries"] = summary_job.result()
        if status == "completed" and ctx.shared.get("failed_detectors"):
            status = "partial"  # the store was read completely; the other detectors' findings are recorded

        if ctx.state is not None:
            self._keep_state(ctx, status)
        if carry is not None:
            ctx.note(
                f"incremental: pass 1 of {', '.join(sorted(carry.detectors)) or 'no detector'} on new or changed "
                f"points only; {len(carried)} finding(s) carried from scan {carry.previous_scan_id}"
            )
        try:
            return self._record(
                ctx, scan_id, collection_id, findings, status, error, error_exit, cursor, active, carried, stages
            )
        finally:
            ctx.close()

    def _open_scan(
        self,
        info: Any,
        collection_id: int,
        *,
        incremental: bool,
        lock: ScanLock,
        calibrations: dict[str, calibration.RuleCalibration] | None = None,
    ) -> int:
        """Record the scan as running; in the same transaction the lock names it (see auditor.scanlock)."""
        opts = self.options
        configs = [d.config() for d in self.detectors]
        lines = calibrations or {}
        for cfg, det in zip(configs, self.detectors, strict=True):
            mine = {r.id: lines[r.id].as_config() for r in det.rules if r.id in lines}
            if mine:
                cfg["calibration"] = mine
        with self.ledger.session() as s:
            scan = ScanRow(
                collection_id=collection_id,
                source=self.connector.uri.redacted(),
                collection_name=info.name,
                status="running",
                operator=opts.operator or _whoami(),
                tool_version=__version__,
                field_map=opts.field_map.as_dict(),
                detector_configs=configs,
                collection_info=info.as_dict(),
                counts={},
                notes=[],
                incremental=incremental,
            )
            s.add(scan)
            s.flush()
            lock.attach_scan(s, scan.id)
            return scan.id

    def _begin_detectors(self, ctx: ScanContext) -> list[Detector]:
        """The detectors that run: skip reasons noted, then ``begin`` (validation) of each before the scan row
        exists, so a bad parameter or flag is a usage error with no scan recorded. A detector whose ``begin``
        crashes is left out and the scan will be partial, as for a crash in a later stage."""
        active: list[Detector] = []
        for det in self.detectors:
            reason = det.skip_reason(ctx)
            if reason:
                ctx.note(f"detector {det.name} skipped: {reason}")
                continue
            self._guard(ctx, det, "begin", lambda d=det: d.begin(ctx) or ())
            if det.name not in ctx.shared.get("failed_detectors", ()):
                active.append(det)
        return active

    @staticmethod
    def _keep_budgets(ctx: ScanContext, active: list[Detector], found: list[Finding]) -> None:
        """Hold each detector's statistical findings to its alert budget (auditor.budget); notes say what moved."""
        n_points = len(ctx.table)
        for budget in budgets_for(active):
            outcome = apply_budget(found, budget, n_points)
            if outcome.candidates:
                ctx.note(outcome.describe(n_points, budget.alert_budget))

    # -- review-driven recalibration ----------------------------------------------------------------------
    def _calibrations(self, s: Any, collection_id: int) -> dict[str, calibration.RuleCalibration]:
        """The alert lines the collection's reviews set for the rules of this scan's detectors."""
        minimum = self.options.calibration_min_false_positives
        if minimum is None:
            return {}
        rules = {r.id for d in self.detectors for r in d.rules}
        found = calibration.rule_calibrations(s, collection_id, min_false_positives=minimum)
        return {r: c for r, c in calibration.active(found).items() if r in rules}

    @staticmethod
    def _calibrate(
        ctx: ScanContext, calibrations: dict[str, calibration.RuleCalibration], found: list[Finding]
    ) -> None:
        """Keep findings at or below their rule's review-calibrated line as LOW; say so in the notes."""
        if not calibrations:
            return
        kept = calibration.apply(found, calibrations)
        for rule_id, cal in sorted(calibrations.items()):
            ctx.note(
                f"calibration: {cal.describe()}: {kept.get(rule_id, 0)} finding(s) kept as LOW "
                "(`vecaudit calibration reset` undoes it)"
            )

    # -- incremental ------------------------------------------------------------------------------------
    @staticmethod
    def _keep_state(ctx: ScanContext, status: str) -> None:
        """Commit what this scan staged for the next incremental scan (or drop it); say what was reused."""
        state = ctx.state
        assert state is not None
        embedder = ctx.embedder_if_loaded()
        for name, c in sorted(ctx.graph_reuse.items()):
            ctx.note(
                f"incremental: neighbour graph {name!r} patched: {c['reused']:,} rows reused, "
                f"{c['searched']:,} searched again"
            )
        if embedder is not None and embedder.recorded is not None:
            reused = len(embedder.recorded) - embedder.encoded_fresh
            if reused > 0:
                ctx.note(f"incremental: {reused:,} re-embeddings reused, {embedder.encoded_fresh:,} texts encoded")
        try:
            if status != "completed":
                state.abandon()
                return
            if embedder is not None and embedder.recorded:
                state.stage_encodings(embedder.cache_key, embedder.recorded)
            state.commit([point_key(p) for p in ctx.table.ids], list(ctx.table.vector_hashes))
        except OSError as e:
            log.warning("incremental state not kept in %s: %s", state.path, e)
            ctx.note(f"incremental state not kept ({e}): the next incremental scan rebuilds the graph")

    def _settings_basis(self) -> dict[str, Any]:
        """What must be equal between two scans for pass-1 findings to carry over (besides detector configs)."""
        opts = self.options
        settings = dataclasses.asdict(opts.settings)
        return json.loads(json.dumps({"field_map": opts.field_map.as_dict(), "settings": settings}, default=str))

    def _carry_basis(self, s: Any, previous_scan: ScanRow | None) -> _Carry | None:
        """Detectors whose pass-1 findings may be carried from ``previous_scan``, and those findings."""
        if previous_scan is None or previous_scan.counts.get("basis") != self._settings_basis():
            return None
        previous_configs = {c.get("name"): c for c in previous_scan.detector_configs or []}
        # the review-driven calibration is applied after the detectors ran, so it does not stop a carry
        names = {
            d.name
            for d in self.detectors
            if d.pointwise_observe
            and {k: v for k, v in (previous_configs.get(d.name) or {}).items() if k != "calibration"}
            == json.loads(json.dumps(d.config()))
        }
        by_name = {d.name: d for d in self.detectors}
        found: dict[str, list[tuple[Finding, str]]] = {}
        if names:
            rows = s.execute(
                select(FindingRow, FindingOccurrenceRow)
                .join(FindingOccurrenceRow, FindingOccurrenceRow.finding_id == FindingRow.id)
                .where(
                    FindingOccurrenceRow.scan_id == previous_scan.id,
                    FindingOccurrenceRow.stage == "observe",
                    FindingRow.detector.in_(sorted(names)),
                    FindingRow.point_key.is_not(None),
                )
            )
            for row, occ in rows:
                finding = _finding_from_ledger(row, occ, by_name[row.detector])
                found.setdefault(row.point_key, []).append((finding, row.fingerprint))
        return _Carry(detectors=names, findings=found, previous_scan_id=previous_scan.id)

    # -- passes -----------------------------------------------------------------------------------------
    def _pass_one(
        self,
        ctx: ScanContext,
        active: list[Detector],
        findings: list[Finding],
        carry: _Carry | None = None,
        carried: list[tuple[Finding, str]] | None = None,
    ) -> Any:
        opts = self.options
        bar = progress_bar(total=ctx.info.count or None, desc="scan", unit="pt", enabled=opts.show_progress)
        cursor: Any = None
        try:
            for page, page_cursor in self.connector.iter_batches(batch_size=opts.batch_size):
                batch = resolve_batch(page, opts.field_map, ctx.info.dim, offset=len(ctx.table))
                ctx.table.append(batch)
                fresh = batch
                if carry is not None and carry.detectors and carried is not None:
                    fresh = self._carry_unchanged(ctx, batch, carry, carried)
                for det in active:
                    b = fresh if carry is not None and det.name in carry.detectors else batch
                    if len(b):
                        findings.extend(self._guard(ctx, det, "observe", lambda d=det, b=b: list(d.observe(b, ctx))))
                bar.update(len(batch))
                cursor = page_cursor
        except ConnectorError:
            raise
        finally:
            bar.close()
        return cursor

    @staticmethod
    def _carry_unchanged(
        ctx: ScanContext, batch: RecordBatch, carry: _Carry, carried: list[tuple[Finding, str]]
    ) -> RecordBatch:
        """Carry the findings of the batch's unchanged points; the sub-batch of new or changed points."""
        previous = ctx.previous or {}
        changed: list[int] = []
        for i, pid in enumerate(batch.ids):
            key = point_key(pid)
            old = previous.get(key)
            if old is not None and (old.vector_hash, old.payload_hash, old.text_hash) == (
                batch.vector_hashes[i],
                batch.payload_hashes[i],
                batch.text_hashes[i],
            ):
                carried.extend(carry.findings.get(key, ()))
            else:
                changed.append(i)
        return _sub_batch(batch, changed)

    def _pass_two(self, ctx: ScanContext, active: list[Detector], findings: list[Finding]) -> None:
        for det in active:
            findings.extend(self._guard(ctx, det, "finish", lambda d=det: list(d.finish(ctx))))

    @staticmethod
    def _guard(ctx: ScanContext, det: Detector, stage: str, fn: Any) -> list[Finding]:
        """Run one detector stage; a detector bug makes the scan partial instead of losing the others.
        Its wall time is added to ``ctx.seconds`` under ``<detector>.<stage>``."""
        started = time.perf_counter()
        try:
            return list(fn())
        except (VecauditError, KeyboardInterrupt):
            raise
        except Exception as e:
            log.debug("detector %s failed in %s", det.name, stage, exc_info=True)
            ctx.note(f"detector {det.name} failed: {type(e).__name__}: {e} (in {stage})")
            ctx.shared.setdefault("failed_detectors", set()).add(det.name)
            return []
        finally:
            ctx.add_seconds(f"{det.name}.{stage}", time.perf_counter() - started)

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
        carried: Sequence[tuple[Finding, str]] = (),
        stages: dict[int, str] | None = None,
    ) -> ScanResult:
        table = ctx.table
        stages = stages or {}
        counts: dict[str, Any] = {"points": len(table), "findings": 0, "basis": self._settings_basis()}
        counts["seconds"] = {k: round(v, 3) for k, v in sorted(ctx.seconds.items())}
        recorded: list[repo.RecordedFinding] = []
        failed = ctx.shared.get("failed_detectors", set())
        read_complete = status == "completed" or (status == "partial" and error is None)
        with self.ledger.session() as s:
            if read_complete:
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
                items.extend(carried)
                carried_ids = {id(f) for f, _ in carried}
                # pass-1 findings (and those carried from the last scan) are "observe", the rest "finish"
                occurrence_stages: list[str | None] = [
                    "observe" if stages.get(id(f)) == "observe" or id(f) in carried_ids else "finish" for f, _ in items
                ]
                recorded = repo.record_findings(
                    s, collection_id=collection_id, scan_id=scan_id, items=items, stages=occurrence_stages
                )
                summaries.store(
                    s,
                    collection_id=collection_id,
                    scan_id=scan_id,
                    summaries=ctx.shared.get("tenant_summaries", {}),
                )
                repo.resolve_absent_findings(
                    s,
                    collection_id=collection_id,
                    scan_id=scan_id,
                    detectors=[d.name for d in active if d.name not in failed],
                )
                counts["findings"] = len(recorded)
                counts["carried"] = len(carried)
                counts["alerts"] = self._decide_alerts(recorded, changes, baseline=bool(change_counts["baseline"]))
                counts.update(repo.scan_finding_summary(s, scan_id))
            repo.finish_scan(
                s,
                scan_id,
                status=status,
                counts=counts,
                points_scanned=len(table),
                notes=ctx.notes,
                error=error,
                cursor=None if read_complete else cursor_to_json(cursor),
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

    def _decide_alerts(
        self, recorded: list[repo.RecordedFinding], changes: list[repo.PointChange], *, baseline: bool
    ) -> dict[str, Any]:
        """Mark which recorded findings alert, and why (auditor.alerting); the counts for the scan row."""
        mode = self.options.alert_on
        changed = {c.point_key for c in changes if c.change in ("new", "changed")}
        alerting = 0
        for rec in recorded:
            rec.alert, rec.alert_reason = alert_decision(
                rec.finding,
                status=rec.status,
                is_new=rec.is_new,
                previous_severity=rec.previous_severity,
                mode=mode,
                baseline=baseline,
                changed_points=changed,
                silenced=repo.SILENCED_STATUSES,
            )
            alerting += rec.alert
        return {"alert_on": mode, "alerting": alerting, "quiet": len(recorded) - alerting}

    def _notify(self, result: ScanResult, collection: str) -> None:
        assert self.options.notify_url is not None
        if not should_notify(result):
            return
        payload = summary_payload(result, collection=collection, source=self.connector.uri.redacted())
        failure = post_json(self.options.notify_url, payload)
        note = (
            f"notified the webhook of {payload['new_findings_total']} new finding(s)"
            if failure is None
            else f"webhook notification failed: {failure}"
        )
        if failure is not None:
            log.warning("%s", note)
        result.notes.append(note)
        with self.ledger.session() as s:
            scan = s.get(ScanRow, result.scan_id)
            if scan is not None:
                scan.notes = [*(scan.notes or []), note]


#: Point tables up to this size (float32 vectors) are summarised beside pass 2 (:func:`_summaries_beside_pass_two`).
_SUMMARIES_BESIDE_BYTES = 512 * 1024 * 1024


def _summaries_beside_pass_two(
    ctx: ScanContext, seed: int, drift_reads_them: bool
) -> futures.Future[dict[str | None, summaries.TenantSummary]] | None:
    """The tenant summaries of this scan (``auditor.summaries``) computed on a thread while pass 2 runs, or None
    where a pass-2 detector reads them (drift, when an earlier scan left summaries to compare with): they are then
    computed before pass 2, as ``ctx.shared["tenant_summaries"]``.

    Why: on a collection's first scan only the ledger needs them, and their work (normalising every vector, a keyed
    hash per point id) took one core for 0.5 s at 100k points and several seconds at 1M while pass 2 left the other
    core idle in its single-threaded stretches (benchmarks/results/in-process-speed.md). The valid-row mask, which
    pass 2 shares, is computed first on this thread, so both threads read the same one. The thread only reads the
    sealed point table. Only up to ``_SUMMARIES_BESIDE_BYTES`` of vectors: the pages of the memory-mapped table it
    reads stay resident while the graph holds its own copy (1M x 384: peak RSS 3.1 -> 4.5 GiB), so a larger
    table is summarised before pass 2, whose first copy then unmaps them."""
    table = ctx.table
    if drift_reads_them or len(table) * table.dim * 4 > _SUMMARIES_BESIDE_BYTES:
        return None
    ctx.valid_mask()
    pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecaudit-summaries")
    try:
        return pool.submit(summaries.summarise, ctx, seed=seed)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one job


def _sub_batch(batch: RecordBatch, rows: list[int]) -> RecordBatch:
    """The rows ``rows`` of ``batch`` (``offset`` kept: pointwise detectors must not rely on it)."""
    if len(rows) == len(batch):
        return batch
    pick = np.asarray(rows, dtype=np.int64)
    return RecordBatch(
        offset=batch.offset,
        ids=[batch.ids[i] for i in rows],
        vectors=batch.vectors[pick] if len(rows) else batch.vectors[:0],
        stored_dims=batch.stored_dims[pick] if len(rows) else batch.stored_dims[:0],
        payloads=[batch.payloads[i] for i in rows],
        text_values=[batch.text_values[i] for i in rows],
        tenant_values=[batch.tenant_values[i] for i in rows],
        doc_ids=[batch.doc_ids[i] for i in rows],
        timestamps=[batch.timestamps[i] for i in rows],
        vector_hashes=[batch.vector_hashes[i] for i in rows],
        payload_hashes=[batch.payload_hashes[i] for i in rows],
        text_hashes=[batch.text_hashes[i] for i in rows],
        repairs=[batch.repairs_of(i) for i in rows],
    )


def _finding_from_ledger(row: FindingRow, occ: FindingOccurrenceRow, detector: Detector) -> Finding:
    """A carried pass-1 finding rebuilt from the ledger (its fingerprint is carried alongside, unchanged)."""
    try:
        rule = detector.rule(row.rule_id)
    except KeyError:
        rule = Rule(row.rule_id, row.title, Severity(row.severity), Confidence(row.confidence), tuple(row.tags))
    severity = Severity(row.severity)
    confidence = Confidence(row.confidence)
    point: PointId = json.loads(row.point_key or "null")
    finding = Finding(
        rule=rule,
        detector=row.detector,
        point_id=point,
        score=occ.score,
        message=occ.message,
        threshold=occ.threshold,
        evidence=dict(occ.evidence or {}),
        tenant=row.tenant,
        severity=None if severity == rule.severity else severity,
        confidence=None if confidence == rule.confidence else confidence,
    )
    calibration.undo(finding)  # this scan's calibration decides again
    return finding


def _point_changes(ctx: ScanContext) -> tuple[list[repo.PointChange], dict[str, Any]]:
    """New / changed / deleted points against the previous completed scan (all new on a baseline)."""
    table = ctx.table
    previous = ctx.previous
    changes: list[repo.PointChange] = []
    seen: set[str] = set()
    new = changed = 0
    # one state per id: the copies of an id stored twice are folded into one (auditor.hashing.point_states)
    for key, vh, ph, th, tenant in point_states(
        table.ids, table.vector_hashes, table.payload_hashes, table.text_hashes, table.tenants
    ):
        seen.add(key)
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
